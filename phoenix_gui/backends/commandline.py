"""Command lines, .kcpps configs and launcher scripts for a plan.

Every value Phoenix cares about is passed explicitly: defaults moved between koboldcpp and
llama.cpp releases, and an omitted split means "by free memory at load", a snapshot of whatever
else runs at that instant.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ..hardware.rig import Rig
from ..planner.ledger import Plan
from ..planner.plan import selected_gpus
from ..planner.settings import PlanSettings, format_overrides
from ..validate import InputError, check_writable, split_weights

KOBOLD_KV_TYPES = ("f16", "bf16", "q8_0", "q5_1", "q4_0")


@dataclass
class LaunchCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    backend: str = "koboldcpp"

    def shell_line(self) -> str:
        """For display and copy-paste into sh (shlex quoting holds for any text)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + " ".join(shlex.quote(a) for a in self.argv)

    def cmd_line(self) -> str:
        """For display and copy-paste into cmd.exe; a character cmd.exe cannot carry safely is shown
        as U+FFFD, so even a hostile value never shows as a runnable second command."""
        sets = "".join(f'set "{k}={_bat_text(_displayable(v))}" && ' for k, v in self.env.items())
        return sets + " ".join(cmd_quote(_displayable(a)) for a in self.argv)


def _num(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _default_exe(backend: str) -> list[str]:
    return ["koboldcpp"] if backend == "koboldcpp" else ["llama-server"]


def exe_argv(exe: str | Path | None, backend: str) -> list[str]:
    """A koboldcpp.py runs with this Python; a binary runs as itself."""
    if exe is None:
        return _default_exe(backend)
    exe = str(exe)
    if exe.lower().endswith(".py"):
        return [sys.executable, exe]
    return [exe]


def device_env(rig: Rig, settings: PlanSettings) -> dict[str, str]:
    """Make the engine number GPUs as NVML does and see only the chosen ones, in the chosen order
    (this PC's GPUs: another PC's devices come through --rpc, not CUDA)."""
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    gpus = [g for g in selected_gpus(rig, settings) if not g.is_remote]
    if gpus and [g.uuid for g in gpus] != [g.uuid for g in rig.gpus if not g.is_remote]:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(g.uuid if g.uuid else str(g.index) for g in gpus)
    return env


# --- devices other PCs share over RPC ---
# The engine puts every device of every --rpc server first (in --rpc order, each server's devices in its
# order), then its own CUDA devices; tensor-split positions and device names follow that order.

def rpc_nodes(plan: Plan, rig: Rig) -> list[str]:
    """The --rpc / --rpctargets list: the nodes the plan puts a device of, in rig (engine) order."""
    return list(dict.fromkeys(rig.gpus[d.gpu_index].node for d in plan.gpus if rig.gpus[d.gpu_index].is_remote))


def engine_devices(plan: Plan, rig: Rig) -> list[tuple[int | None, str, str]]:
    """Every device the engine will see, in its order: (the plan's GPU position or None when the plan
    leaves it out, llama-server's device name, the buffer type name in overrides and logs). RPC devices
    are numbered across servers (RPC0, RPC1, ...); their buffers are RPC<i>[host:port], i within a server."""
    pos = {d.gpu_index: i for i, d in enumerate(plan.gpus)}
    out: list[tuple[int | None, str, str]] = []
    for addr in rpc_nodes(plan, rig):
        for j, gi in enumerate(k for k, g in enumerate(rig.gpus) if g.node == addr):
            out.append((pos.get(gi), f"RPC{len(out)}", f"RPC{j}[{addr}]"))
    local = [(i, rig.gpus[d.gpu_index]) for i, d in enumerate(plan.gpus) if not rig.gpus[d.gpu_index].is_remote]
    for k, (i, _g) in enumerate(local):  # CUDA_VISIBLE_DEVICES / --device make them the engine's CUDA0, 1, ...
        out.append((i, f"CUDA{k}", f"CUDA{k}"))
    return out


def engine_split(plan: Plan, rig: Rig) -> list[float]:
    """The plan's tensor split over the engine's devices (0 for a node's device the plan does not use), in
    numbers an engine reads as meant (validate.split_weights: of a sane size, 4 decimals)."""
    if not rpc_nodes(plan, rig):
        return split_weights(plan.tensor_split)
    return split_weights([plan.tensor_split[i] if i is not None and i < len(plan.tensor_split) else 0.0
                          for i, _n, _b in engine_devices(plan, rig)])


def _engine_overrides(plan: Plan, rig: Rig) -> list[tuple[str, str]]:
    """koboldcpp's overrides with "CUDAn" (the plan's n-th GPU) as the engine's buffer type for that device."""
    by_pos = {i: b for i, _n, b in engine_devices(plan, rig) if i is not None}
    out = []
    for rx, buft in plan.settings.overrides:
        m = re.match(r"CUDA(\d+)$", buft)
        out.append((rx, by_pos.get(int(m.group(1)), buft) if m else buft))
    return out


def koboldcpp_command(plan: Plan, rig: Rig, model_path: str | Path, exe=None) -> LaunchCommand:
    s: PlanSettings = plan.settings
    argv = exe_argv(exe, "koboldcpp") + ["--skiplauncher", "--model", str(model_path)]
    env = {"PYTHONUNBUFFERED": "1"}
    nodes = rpc_nodes(plan, rig)
    if plan.gpus and plan.gpulayers > 0:
        env.update(device_env(rig, s))
        if any(not rig.gpus[d.gpu_index].is_remote for d in plan.gpus):
            argv += ["--usecuda"]  # bare: every visible GPU, no masking by id
        else:  # only other PCs' devices: koboldcpp keeps --gpulayers with --usecpu in connect mode
            argv += ["--usecpu"]
        if nodes:
            argv += ["--rpcmode", "connect", "--rpctargets", ",".join(nodes)]
        argv += ["--gpulayers", str(plan.gpulayers)]
        split = engine_split(plan, rig)
        if len(split) > 1:
            argv += ["--tensor_split", *(_num(x) for x in split)]
        if s.split_mode == "row" and len(plan.gpus) > 1:
            argv += ["--splitmode", "row"]
        if s.overrides:  # koboldcpp applies them before --moecpu's own
            argv += ["--overridetensors", format_overrides(_engine_overrides(plan, rig) if nodes else s.overrides)]
        if s.moecpu:
            argv += ["--moecpu", str(s.moecpu)]
        if s.lowvram:
            argv += ["--lowvram"]
    else:
        argv += ["--usecpu", "--gpulayers", "0"]
    kv = s.cache_type_k if s.cache_type_k in KOBOLD_KV_TYPES else "f16"
    argv += ["--contextsize", str(s.context), "--batchsize", str(s.batch), "--quantkv", kv]
    if not s.flash_attn:
        argv += ["--noflashattention"]
    if s.mmap:
        argv += ["--usemmap"]
    if s.threads:
        argv += ["--threads", str(s.threads)]
    for name, x in s.engine_options:  # kept from the user's config as they set them
        argv += [f"--{name}"] + ([] if x is True else [str(x)])
    if s.parallel > 1:
        argv += ["--parallelrequests", str(s.parallel)]  # slots sharing one unified cache
    argv += ["--host", s.host, "--port", str(s.port), "--multiuser", "1"]
    argv += ["--singleinstance"]  # lets /api/extra/shutdown stop it cleanly
    return LaunchCommand(argv, env, "koboldcpp")


def llama_server_command(plan: Plan, rig: Rig, model_path: str | Path, exe=None) -> LaunchCommand:
    s: PlanSettings = plan.settings
    argv = exe_argv(exe, "llama-server") + ["-m", str(model_path)]
    env: dict[str, str] = {}
    type_k, type_v = s.kv_types()
    if plan.gpus and plan.gpulayers > 0:
        env.update(device_env(rig, s))
        env.pop("CUDA_VISIBLE_DEVICES", None)
        # --device lists the chosen GPUs in the chosen order (CUDAn = PCI order under PCI_BUS_ID); another
        # PC's device by its RPC name (RPC devices are numbered across the --rpc servers, in that order)
        nodes = rpc_nodes(plan, rig)
        rpc_name = {i: n for i, n, _b in engine_devices(plan, rig) if i is not None and n.startswith("RPC")}
        pci_order = sorted((g for g in rig.gpus if not g.is_remote), key=lambda g: g.pci_bus_id.lower())
        names = [rpc_name[i] if i in rpc_name else f"CUDA{pci_order.index(rig.gpus[d.gpu_index])}"
                 for i, d in enumerate(plan.gpus)]
        if nodes:
            argv += ["--rpc", ",".join(nodes)]
        argv += ["--device", ",".join(names), "-ngl", str(plan.gpulayers)]
        if len(plan.gpus) > 1:
            # --device lists the plan's GPUs in its own order, so the split follows that order
            argv += ["-ts", ",".join(_num(x) for x in split_weights(plan.tensor_split))]
            argv += ["-sm", "row" if s.split_mode == "row" else "layer"]
        for rx, buft in s.overrides:  # before --n-cpu-moe: the first matching pattern wins
            gpu = re.match(r"CUDA(\d+)$", buft)  # the plan's n-th GPU, by its --device name
            argv += ["-ot", f"{rx}={names[int(gpu.group(1))] if gpu else buft}"]
        if s.moecpu:
            argv += ["--n-cpu-moe", str(s.moecpu)]
        if s.lowvram:
            argv += ["-nkvo"]
    else:
        argv += ["-ngl", "0"]
    argv += ["-c", str(s.context), "-b", str(s.batch), "-ub", str(s.batch), "-ctk", type_k, "-ctv", type_v,
             "-fa", "on" if s.flash_attn else "off", "-np", str(s.parallel), "--fit", "off"]
    if s.parallel > 1:
        argv += ["--kv-unified"]  # every slot may use the whole context, as koboldcpp's slots do
    if not s.mmap:  # the user (or an import) turned mapping off; mapping is this engine's default
        argv += list(s.profile.no_mmap_args)
    if s.threads:
        argv += ["-t", str(s.threads)]
    kept = dict(s.engine_options)  # llama-server's names for what a koboldcpp config kept; --quiet and
    if kept.get("blasthreads"):  # --highpriority have no llama-server twin and stay koboldcpp's
        argv += ["-tb", str(kept["blasthreads"])]
    if kept.get("usemlock"):
        argv += ["--mlock"]
    argv += ["--host", s.host, "--port", str(s.port)]
    # Prometheus counters for the throughput graph; the per-device buffer lines appear only at verbosity 4
    argv += ["--metrics", "-lv", "4"]
    return LaunchCommand(argv, env, "llama-server")


def launch_command(plan: Plan, rig: Rig, model_path, exe=None) -> LaunchCommand:
    """The exact command Phoenix runs: the launcher, the shown command line and the exports all use it."""
    if plan.settings.backend == "llama-server":
        return llama_server_command(plan, rig, model_path, exe)
    return koboldcpp_command(plan, rig, model_path, exe)


def kcpps_config(plan: Plan, rig: Rig, model_path: str | Path) -> dict:
    """A koboldcpp config with every placement key explicit; port and port_param agree."""
    s: PlanSettings = plan.settings
    gpu = bool(plan.gpus and plan.gpulayers > 0)
    nodes = rpc_nodes(plan, rig) if gpu else []
    local = gpu and any(not rig.gpus[d.gpu_index].is_remote for d in plan.gpus)
    split = engine_split(plan, rig)
    kv = s.cache_type_k if s.cache_type_k in KOBOLD_KV_TYPES else "f16"
    rpc = {"rpcmode": "connect", "rpctargets": ",".join(nodes)} if nodes else {"rpcmode": "disabled", "rpctargets": ""}
    return {
        "model": [str(model_path)], "model_param": str(model_path),
        "usecuda": ["normal"] if local else None, "usevulkan": None, "usecpu": not local,
        "gpulayers": plan.gpulayers if gpu else 0,
        "tensor_split": [float(x) for x in split] if gpu and len(split) > 1 else None, **rpc,
        "maingpu": -1, "splitmode": "row" if s.split_mode == "row" else "layer",
        "device": kcpps_devices(plan, rig),
        "lowvram": s.lowvram, "nopipelineparallel": False, "autofit": False, "autofitpadding": 1024,
        "moecpu": s.moecpu, "contextsize": s.context, "quantkv": kv,
        "overridetensors": format_overrides(_engine_overrides(plan, rig) if nodes else s.overrides) if gpu else "",
        "noflashattention": not s.flash_attn, "batchsize": s.batch, "threads": s.threads or -1,
        "blasthreads": dict(s.engine_options).get("blasthreads", 0), "usemmap": s.mmap,
        "usemlock": bool(dict(s.engine_options).get("usemlock")), "highpriority": bool(dict(s.engine_options).get("highpriority")),
        "host": s.host, "port": s.port, "port_param": s.port,
        "multiuser": 1, "parallelrequests": s.parallel, "quiet": bool(dict(s.engine_options).get("quiet")),
        "skiplauncher": True, "istemplate": False,
    }


def kcpps_devices(plan: Plan, rig: Rig) -> str:
    """koboldcpp's `device` list for a .kcpps, which cannot carry CUDA_VISIBLE_DEVICES: when the plan
    uses some of this PC's GPUs or another order, name them (koboldcpp numbers CUDA devices in PCI bus
    order, as NVML does) after the other PCs' devices (RPC0, RPC1, ... across servers; the engine refuses
    the RPC0[host:port] form here). Empty: every GPU in PCI order, koboldcpp's own choice."""
    if not (plan.gpus and plan.gpulayers > 0) or "CUDA_VISIBLE_DEVICES" not in device_env(rig, plan.settings):
        return ""
    names = [n for _i, n, _b in engine_devices(plan, rig) if n.startswith("RPC")]
    names += [f"CUDA{rig.gpus[d.gpu_index].index}" for d in plan.gpus if not rig.gpus[d.gpu_index].is_remote]
    return ",".join(names)


def write_kcpps(plan: Plan, rig: Rig, model_path, out: str | Path, force: bool = False) -> Path:
    """Write a .kcpps; over an existing file only with force, never over a model."""
    cfg = kcpps_config(plan, rig, model_path)
    # koboldcpp puts these on its own command lines and in its launcher
    check_value(cfg["model_param"], "The model path")
    check_value(cfg["host"], "The host")
    out = check_writable(out, force, "config")
    out.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return out


# --- launcher scripts ---
# A value reaches a script only through these checks: no control character (CR/LF would start a new
# command in a .bat, NUL ends a C string, Ctrl-Z ends a .bat), and in a .bat no double quote (cmd.exe
# has no escape for it inside quotes, so it would end the quoting).

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_control(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Zl", "Zp")  # C0, DEL, C1 (NEL), line/paragraph separators


def check_value(value: str, what: str = "A value") -> str:
    """Refuse text with control characters: in a command line or a script they start a new command."""
    if any(_is_control(c) for c in value):
        raise InputError(f"{what} ({_short(value)}) contains a control character such as a line break, "
                         "which cannot go into a command line or a script.")
    return value


def _short(value: str) -> str:
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _check_env_name(name: str) -> None:
    if not _ENV_NAME.match(name):
        raise InputError(f"{_short(name)} is not an environment variable name.")


def _check_bat_value(value: str, what: str) -> str:
    check_value(value, what)
    if '"' in value:
        raise InputError(f"{what} ({_short(value)}) contains a double quote, which cmd.exe cannot pass safely.")
    return value


def _displayable(value: str) -> str:
    return "".join("\ufffd" if _is_control(c) or c == '"' else c for c in value)


def _bat_text(s: str) -> str:
    """Inside double quotes cmd.exe takes & | < > ^ ( ) ! literally (delayed expansion off); % is
    expanded even there, so it is doubled."""
    return s.replace("%", "%%")


def cmd_quote(arg: str) -> str:
    """One argument for a .bat line, always in double quotes. Trailing backslashes are doubled so that
    the program's C runtime does not read the closing quote as an escaped one."""
    _check_bat_value(arg, "An argument")
    stripped = arg.rstrip("\\")
    return '"' + _bat_text(stripped + "\\" * (2 * (len(arg) - len(stripped)))) + '"'


def bat_script(cmd: LaunchCommand) -> str:
    for k, v in cmd.env.items():
        _check_env_name(k)
        _check_bat_value(v, f"The value of {k}")
    lines = ["@echo off", "rem Written by Phoenix. Runs the planned server; close this window to stop it.",
             "chcp 65001 >nul", "setlocal DisableDelayedExpansion"]
    lines += [f'set "{k}={_bat_text(v)}"' for k, v in cmd.env.items()]
    lines += [" ".join(cmd_quote(a) for a in cmd.argv), "pause", ""]
    return "\r\n".join(lines)


def sh_script(cmd: LaunchCommand) -> str:
    for k, v in cmd.env.items():
        _check_env_name(k)
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
