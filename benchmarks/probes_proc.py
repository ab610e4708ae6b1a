"""Probe surface "process" (see probe_kit.py): what reaches and what is left by an engine.

  split     weights of any magnitude through the plan, both command lines, the .kcpps and .sh exports:
            equal weights must give an even split, any weights their ratio, and the engine short finite numbers
  kcpps     the same weights read from a .kcpps file
  daemon    a server that double-forks a daemon into its own session (tests/daemonizing_server.py) under
            `phoenix bench` and `phoenix launch`: nothing may be left running
  readonly  a read-only data folder (a tmpfs mounted read-only; left out where mounting is not allowed)
            under `phoenix bench` and `phoenix launch`: one sentence naming the folder, not the engine
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from probe_kit import Defect

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "daemonizing_server.py"
FAKE = ROOT / "tests" / "fake_koboldcpp.py"
WEIGHTS = [[1e308] * 3, [1.7e308] * 2, [1e308, 5e307, 5e307], [1e-300] * 3, [5e-324] * 3, [1e-3, 2e-3, 1e-3],
           [1e7] * 3, [1.5, 4.5, 3.0]]
BAD = [[float("inf"), 1.0], [1e308, float("nan")], [10 ** 400, 1], [-1e308, 1e308]]


def cases() -> list[dict]:
    out = [dict(name=f"split {w} {b}", expect="plan", kind="split", weights=w, backend=b)
           for w in WEIGHTS for b in ("koboldcpp", "llama-server")]
    out += [dict(name=f"kcpps tensor_split {w}", expect="plan", kind="kcpps", weights=w) for w in WEIGHTS[:5]]
    out += [dict(name=f"split {w}", expect="error", kind="bad", weights=w) for w in BAD]
    if sys.platform.startswith("linux"):
        out += [dict(name=f"double-forking server under {c}", expect="plan", kind="daemon", command=c)
                for c in ("bench", "launch")]
    if _can_mount():
        out += [dict(name=f"read-only data folder ({shape}) under {c}", expect="error", kind="readonly", command=c,
                     shape=shape) for c in ("bench", "launch") for shape in ("no logs folder", "read-only logs")]
    return out


def run(p: dict, work: Path) -> str:
    return {"split": _split, "kcpps": _kcpps, "bad": _bad, "daemon": _daemon, "readonly": _readonly}[p["kind"]](p, work)


# --- split weights ---

def _ratio(w: list[float]) -> list[float]:
    top = max(w)
    r = [x / top for x in w]
    return [x / sum(r) for x in r]


def _check_plan(plan, rig, weights: list[float], work: Path) -> str:
    from phoenix_gui.backends.commandline import launch_command, request_for, sh_script
    from phoenix_gui.engines.koboldcpp.options import kcpps_config

    layers = [d.layers for d in plan.gpus]
    want = [s * sum(layers) for s in _ratio(weights)]
    if any(abs(a - b) > 1.01 for a, b in zip(layers, want)):
        raise Defect(f"layers {layers} for weights {weights} (their ratio gives {[round(x, 1) for x in want]})")
    cmd = launch_command(plan, rig, work / "m.gguf")
    a = cmd.argv
    sent = a[a.index("--tensor_split") + 1:][:len(weights)] if "--tensor_split" in a else a[a.index("-ts") + 1].split(",")
    cfg = kcpps_config(request_for(plan, rig, work / "m.gguf"))["tensor_split"]
    for what, nums in (("command line", sent), (".kcpps", [json.dumps(x) for x in cfg])):
        bad = [n for n in nums if len(n) > 12 or not 0 <= float(n) < float("inf")]
        if bad or not any(float(n) for n in nums):
            raise Defect(f"the {what} gives the engine {nums}")
        if any(abs(x - y) > 1e-3 for x, y in zip(_ratio([float(n) for n in nums]), _ratio(weights))):
            raise Defect(f"the {what} gives the engine {nums}, not the ratio of {weights}")
    if re.search(r"\d{20,}|inf", sh_script(cmd)):
        raise Defect("the .sh export carries an absurd number")
    return f"layers {layers}, engine gets {' '.join(sent)}"


def _demo():
    from phoenix_gui.hardware import demo_rig_path, load_rig
    from phoenix_gui.model import preset_model_info

    return load_rig(demo_rig_path()), preset_model_info("qwen2.5-7b-instruct-q4_k_m")


def _split(p, work):
    from phoenix_gui.planner import PlanSettings, make_plan
    from phoenix_gui.validate import split

    rig, model = _demo()
    weights = list(split(p["weights"], len(rig.gpus)))  # the CLI's and the wizard's path
    plan = make_plan(model, rig, PlanSettings(tensor_split=tuple(weights), backend=p["backend"]))
    return _check_plan(plan, rig, p["weights"], work)


def _kcpps(p, work):
    from phoenix_gui.backends.kcpps import read_kcpps
    from phoenix_gui.planner import make_plan

    f = work / "weights.kcpps"
    f.write_text(json.dumps({"contextsize": 4096, "usecuda": ["normal"], "gpulayers": 40, "tensor_split": p["weights"]}))
    rig, model = _demo()
    plan = make_plan(model, rig, read_kcpps(f).settings)
    return _check_plan(plan, rig, p["weights"], work)


def _bad(p, work):
    from phoenix_gui.validate import split

    return f"accepted as {split(p['weights'], 3)}"


# --- the engine's processes and Phoenix's own folder ---

def _phoenix_args(command: str, work: Path, exe: Path) -> list[str]:
    from phoenix_gui.backends.processes.ports import free_port
    from phoenix_gui.hardware import demo_rig_path
    from phoenix_gui.model import write_skeleton

    tiny = work / "tiny-proc.gguf"
    if not tiny.exists():
        write_skeleton("tiny-llama-f16", tiny)
    args = [sys.executable, "-m", "phoenix_gui", command, str(tiny), "--rig", str(demo_rig_path()), "--exe", str(exe),
            "--ctx", "2048", "--split", "1", "1", "1", "--port", str(free_port())]
    return args + (["--prompt-tokens", "16", "--gen-tokens", "4"] if command == "bench" else [])


def _daemon(p, work):
    pidfile = work / f"daemon-{p['command']}.pid"
    pidfile.unlink(missing_ok=True)
    env = {**os.environ, "DAEMON_PIDFILE": str(pidfile)}
    proc = subprocess.Popen(_phoenix_args(p["command"], work, SERVER), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    err = ""
    try:
        if p["command"] == "launch":
            for line in proc.stderr:
                err += line
                if "ready in" in line:
                    proc.send_signal(signal.SIGTERM)
                    break
        err += proc.communicate(timeout=15)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not pidfile.exists():
        raise RuntimeError(f"the server never started its daemon: {err.strip()[-200:]}")
    pids = [int(x) for x in pidfile.read_text().split()]
    end = time.monotonic() + 3
    while any(map(_running, pids)) and time.monotonic() < end:
        time.sleep(0.05)
    left = [pid for pid in pids if _running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    if left:
        raise Defect(f"phoenix {p['command']} ended and left the server's daemon (pid {left[0]}) running")
    return f"exit {proc.returncode}, daemon gone"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _can_mount() -> bool:
    import tempfile

    if not sys.platform.startswith("linux"):
        return False
    d = tempfile.mkdtemp(prefix="probe-mount-")
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", d], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", d], capture_output=True)
        return ok
    except OSError:
        return False
    finally:
        os.rmdir(d)


def _readonly(p, work):
    from phoenix_gui.validate import InputError

    data = work / f"ro-{p['command']}-{p['shape'].split()[0]}"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(data)], check=True, capture_output=True)
    try:
        if p["shape"] != "no logs folder":
            (data / "logs").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True, capture_output=True)
        r = subprocess.run(_phoenix_args(p["command"], work, FAKE), capture_output=True, text=True, timeout=15, cwd=ROOT,
                           env={**os.environ, "PHOENIX_DATA_DIR": str(data)})
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)
    err = r.stderr.strip()
    if r.returncode != 2 or "\n" in err or "Traceback" in err:
        raise RuntimeError(f"exit {r.returncode}: {err[-200:]}")
    if "could not be started" in err or "(log:" in err:
        raise Defect(f"Phoenix's own folder reported as the engine's failure: {err}")
    if str(data / "logs") not in err:
        raise Defect(f"the sentence does not name the folder {data / 'logs'}: {err}")
    raise InputError(err.removeprefix("phoenix: "))


SURFACES = {"process": (cases, run)}
