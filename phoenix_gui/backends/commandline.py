"""A plan's command line, .kcpps config and launcher scripts.

request_for copies what an engine needs from (Plan, Rig, model path, exe) into a LaunchRequest, with no
engine rule in the copying; the engine (phoenix_gui/engines) builds its command from that.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..engines import engine_named
from ..engines.koboldcpp.options import kcpps_config
from ..engines.quoting import bat_text, check_bat_value, check_env_name, check_value, cmd_quote
from ..engines.request import LaunchCommand, LaunchRequest
from ..hardware.rig import Rig
from ..planner.ledger import Plan
from ..planner.plan import selected_gpus
from ..planner.settings import PlanSettings
from ..validate import check_writable


def request_for(plan: Plan, rig: Rig, model_path: str | Path = "", exe: str | Path | None = None) -> LaunchRequest:
    """What the engine needs of this plan, copied."""
    s: PlanSettings = plan.settings
    cache_type_k, cache_type_v = s.kv_types()
    return LaunchRequest(
        exe=None if exe is None else str(exe), model_path=str(model_path), rig_gpus=tuple(rig.gpus),
        plan_gpus=tuple(d.gpu_index for d in plan.gpus), selected=tuple(selected_gpus(rig, s)),
        gpulayers=plan.gpulayers, tensor_split=tuple(plan.tensor_split), profile=s.profile,
        context=s.context, batch=s.batch, cache_type_k=cache_type_k, cache_type_v=cache_type_v,
        flash_attn=s.flash_attn, mmap=s.mmap, threads=s.threads, parallel=s.parallel, host=s.host, port=s.port,
        split_mode=s.split_mode, overrides=tuple(s.overrides), moecpu=s.moecpu, lowvram=s.lowvram,
        engine_options=tuple(s.engine_options))


def launch_command(plan: Plan, rig: Rig, model_path, exe=None) -> LaunchCommand:
    """The exact command Phoenix runs: the launcher, the shown command line and the exports all use it."""
    return engine_named(plan.settings.backend).command(request_for(plan, rig, model_path, exe))


def write_kcpps(plan: Plan, rig: Rig, model_path, out: str | Path, force: bool = False) -> Path:
    """Write a .kcpps; over an existing file only with force, never over a model."""
    cfg = kcpps_config(request_for(plan, rig, model_path))
    # koboldcpp puts these on its own command lines and in its launcher
    check_value(cfg["model_param"], "The model path")
    check_value(cfg["host"], "The host")
    out = check_writable(out, force, "config")
    out.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return out


# --- launcher scripts (every value checked by engines/quoting.py first) ---

def bat_script(cmd: LaunchCommand) -> str:
    for k, v in cmd.env.items():
        check_env_name(k)
        check_bat_value(v, f"The value of {k}")
    lines = ["@echo off", "rem Written by Phoenix. Runs the planned server; close this window to stop it.",
             "chcp 65001 >nul", "setlocal DisableDelayedExpansion"]
    lines += [f'set "{k}={bat_text(v)}"' for k, v in cmd.env.items()]
    lines += [" ".join(cmd_quote(a) for a in cmd.argv), "pause", ""]
    return "\r\n".join(lines)


def sh_script(cmd: LaunchCommand) -> str:
    for k, v in cmd.env.items():
        check_env_name(k)
        check_value(v, f"The value of {k}")
    for a in cmd.argv:
        check_value(a, "An argument")
    lines = ["#!/bin/sh", "# Written by Phoenix. Runs the planned server; Ctrl-C stops it.", "set -e"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in cmd.env.items()]
    lines += ["exec " + " ".join(shlex.quote(a) for a in cmd.argv), ""]
    return "\n".join(lines)


def write_launcher(cmd: LaunchCommand, out: str | Path, force: bool = False) -> Path:
    """Write a .bat/.cmd or .sh launcher; over an existing file only with force, never over a model.
    The script is built (and every value checked) before anything is written."""
    bat = Path(out).suffix.lower() in (".bat", ".cmd")
    text = bat_script(cmd) if bat else sh_script(cmd)
    out = check_writable(out, force, "launcher")
    if bat:
        out.write_bytes(text.encode("utf-8"))
    else:
        out.write_text(text, encoding="utf-8")
        out.chmod(0o755)
    return out
