"""Throw hostile inputs at every boundary and count what comes back.

    python benchmarks/probe_inputs.py [--surface NAME] [--verbose]

Surfaces: the real `phoenix` CLI (a subprocess per probe, with a timeout), rig TOMLs, .kcpps files,
settings files, the wizard's state setters, the real wizard widgets offscreen, and GGUF-ish files
(a FIFO among them). Each probe states what it expects: "error" (one clear sentence) or "plan" (a
valid plan or accepted value). A defect is a plan where an error was due, an error where a plan was
due, a traceback, an "unexpected error", a crash or signal, a hang past the timeout, a file changed
that should not have been (data loss), or a process left running. In-process surfaces run in a
child process each, so a crash or a hang is seen and counted instead of ending the run.

Ends with `probes N | clear M | defects K`; exit 1 when there is a defect.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLI_TIMEOUT_S = 60
PROBE_TIMEOUT_S = 20  # one in-process probe
NAN, INF = float("nan"), float("inf")
# surfaces owned by issue 9 part B (process supervision, scripts, launch checks); reported apart
PART_B = {"launch", "script"}
# modules beside this file whose SURFACES add probe surfaces (see probe_kit.py for the interface)
PLUGIN_MODULES = ("probes_files", "probes_net", "probes_proc")


def plugin_surfaces() -> dict:
    """name -> (cases, run) from the modules in PLUGIN_MODULES."""
    import importlib

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    out: dict = {}
    for mod in PLUGIN_MODULES:
        out.update(importlib.import_module(mod).SURFACES)
    return out


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "-"


# --- verdicts ---

def one_sentence(msg: str) -> bool:
    msg = msg.strip()
    return bool(msg) and "\n" not in msg and "Traceback" not in msg and "unexpected error" not in msg


def verdict(expect: str, got: str, detail: str) -> tuple[bool, str]:
    """(clear, why) for one probe: got is "plan", "error" or a defect word."""
    if got == expect:
        return True, ""
    if got in ("plan", "error"):
        return False, f"expected {expect}, got {got}: {detail[:160]}"
    return False, f"{got}: {detail[:160]}"


# --- the CLI, as a user runs it ---

def cli_probes(work: Path, tiny: Path) -> list[dict]:
    model_copy = work / "my model.gguf"
    shutil.copy(tiny, model_copy)
    kept = work / "hand-tuned.kcpps"
    kept.write_text('{"gpulayers": 41}')
    renamed = work / "model.bak"
    shutil.copy(tiny, renamed)
    fifo = work / "pipe.gguf"
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
    P = ["plan", "--demo"]
    E, OK = "error", "plan"
    probes = [
        # devices
        (P + ["--devices", "0,0"], E), (P + ["--devices", "0,1,0"], E), (P + ["--devices", "7"], E),
        (P + ["--devices", "-1"], E), (P + ["--devices", "a,b"], E), (P + ["--devices", "0,,1"], E),
        (P + ["--devices", ",".join(["0"] * 17)], E), (P + ["--devices", "99999999999999999999"], E),
        (P + ["--devices", "2,0"], OK), (P + ["--devices", "1"], OK),
        # split
        (P + ["--split", "1", "2", "3", "4"], E), (P + ["--split", "nan", "1", "1"], E), (P + ["--split", "inf"], E),
        (P + ["--split", "-1", "2", "3"], E), (P + ["--split", "0", "0", "0"], E), (P + ["--split", "1e400"], E),
        (P + ["--split", "-inf", "1"], E), (P + ["--devices", "0,1", "--split", "1", "2", "3"], E),
        (P + ["--split"] + ["1"] * 17, E), (P + ["--split", "1", "2"], OK), (P + ["--split", "1.5", "4.5", "3"], OK),
        # context / batch / layers
        (P + ["--ctx", "0"], E), (P + ["--ctx", "255"], E), (P + ["--ctx", "-4096"], E), (P + ["--ctx", "262145"], E),
        (P + ["--ctx", "99999999999999999999999"], E), (P + ["--ctx", "4k"], E), (P + ["--ctx", "262144"], OK),
        (P + ["--ctx", "256"], OK), (P + ["--backend", "llama-server", "--ctx", "300032"], OK),
        (P + ["--batch", "0"], E), (P + ["--batch", "-512"], E), (P + ["--batch", "100000"], E),
        (P + ["--batch", "1"], OK), (P + ["--gpulayers", "-1"], E), (P + ["--gpulayers", str(2 ** 31)], E),
        (P + ["--gpulayers", str(2 ** 64)], E), (P + ["--gpulayers", "999"], OK), (P + ["--gpulayers", "0"], OK),
        (P + ["--moecpu", "-1"], E), (P + ["--moecpu", str(2 ** 40)], E),
        # MiB knobs
        (P + ["--margin", "nan"], E), (P + ["--margin", "inf"], E), (P + ["--margin", "-1"], E),
        (P + ["--overhead", "1e9"], E), (P + ["--display-reserve", "nan"], E), (P + ["--margin", "0"], OK),
        # network
        (P + ["--port", "0"], E), (P + ["--port", "70000"], E), (P + ["--port", "-1"], E),
        (P + ["--port", "65535"], OK), (P + ["--host", "a b"], E), (P + ["--host", "127.0.0.1\r\ncalc.exe"], E),
        (P + ["--host", ""], E), (P + ["--host", "$(reboot)"], E), (P + ["--host", "300.1.1.1"], E),
        (P + ["--host", "x" * 300], E), (P + ["--host", "::1"], OK), (P + ["--host", "my-pc.lan"], OK),
        # enums and files
        (P + ["--kv", "banana"], E), (P + ["--backend", "ollama"], E), (P + ["--auto", "slowest"], E),
        (P + ["--rig", "/nope.toml"], E), (P + ["--rig", str(work)], E), (P + ["--rig", str(tiny)], E),
        (["plan", str(work / "none.gguf"), "--rig", "phoenix-cluster"], E),
        (["plan", str(work), "--rig", "phoenix-cluster"], E), (["inspect", str(work)], E),
        (["inspect", str(kept)], E), (["inspect", "a\x01b.gguf"], E), (["inspect", str(tiny)], OK),
        (["plan", "--preset", "nope"], E), (["plan"], E),
        # launch arguments refused before anything starts
        (["launch", str(tiny), "--timeout", "nan"], E), (["launch", str(tiny), "--timeout", "inf"], E),
        (["launch", str(tiny), "--timeout", "-5"], E), (["launch", str(tiny), "--retries", "-1"], E),
        (["launch", str(tiny), "--port", "70000"], E), (["launch", str(tiny), "--host", "a b"], E),
        (["bench", str(tiny), "--timeout", "nan"], E), (["bench", str(tiny), "--prompt-tokens", "0"], E),
        (["launch", str(tiny), "--devices", "0"], E),
    ]
    if hasattr(os, "mkfifo"):
        probes += [(["inspect", str(fifo)], E), (["plan", str(fifo), "--rig", "phoenix-cluster"], E)]
    out = [dict(surface="cli", name=" ".join(a)[:90], expect=e, argv=a, watch=[]) for a, e in probes]
    # files the CLI must never change without being asked
    watch = [str(model_copy), str(kept), str(renamed)]
    writes = [
        (["plan", str(model_copy), "--rig", "phoenix-cluster", "--script", str(model_copy)], E),
        (["plan", str(model_copy), "--rig", "phoenix-cluster", "--script", str(model_copy), "--force"], E),
        (["plan", str(model_copy), "--rig", "phoenix-cluster", "--kcpps", str(model_copy), "--force"], E),
        (["plan", "--demo", "--kcpps", str(kept)], E), (["plan", "--demo", "--script", str(kept)], E),
        (["plan", "--demo", "--kcpps", str(renamed), "--force"], E),
        (["plan", "--demo", "--script", str(work / "x.gguf")], E),
        (["plan", "--demo", "--script", str(work / "no dir" / "run.sh")], E),
        (["plan", "--demo", "--script", str(work)], E),
        (["plan", "--demo", "--kcpps", str(work / "k.kcpps"), "--script", str(work / "k.kcpps")], E),
        (["skeleton", "tiny-llama-f16", str(model_copy)], E),
        (["--screenshot", "hardware", str(model_copy), "--demo"], E),
        (["plan", "--demo", "--kcpps", str(work / "new.kcpps")], OK),
    ]
    out += [dict(surface="cli", name="write: " + " ".join(a[-3:])[:84], expect=e, argv=a, watch=watch) for a, e in writes]
    return out


def run_cli(p: dict) -> tuple[str, str]:
    before = {w: sha(Path(w)) for w in p["watch"]}
    home = tempfile.mkdtemp(prefix="probe-home-")  # this PC's own settings and calibrations stay out of it
    try:
        r = subprocess.run([sys.executable, "-m", "phoenix_gui", *p["argv"]], capture_output=True, text=True,
                           timeout=CLI_TIMEOUT_S, cwd=ROOT,
                           env=dict(os.environ, QT_QPA_PLATFORM="offscreen", PHOENIX_CONFIG_DIR=f"{home}/config",
                                    PHOENIX_DATA_DIR=f"{home}/data"))
    except subprocess.TimeoutExpired:
        return "hang", f"no answer in {CLI_TIMEOUT_S} s"
    finally:
        shutil.rmtree(home, ignore_errors=True)
    changed = [Path(w).name for w in p["watch"] if sha(Path(w)) != before[w]]
    if changed:
        return "data loss", f"changed {', '.join(changed)}"
    err = r.stderr.strip()
    if r.returncode < 0:
        return "crash", f"signal {-r.returncode}"
    if "Traceback" in r.stderr or "unexpected error" in r.stderr:
        return "traceback", err.splitlines()[-1] if err else ""
    if r.returncode in (0, 3):
        return "plan", (r.stdout.strip().splitlines() or [""])[0]
    if r.returncode == 2 and (one_sentence(err) or err.startswith("usage:")):
        return "error", err.splitlines()[-1]
    return "crash", f"exit {r.returncode}: {err[-160:]}"


# --- in-process surfaces (each in its own child process) ---

RIG_HEAD = "[system]\nram_gib = 32\n"
CARD = "[[gpu]]\nname = 'NVIDIA GeForce RTX 3060'\nvram_mib = 12288\n"


def rig_cases():
    E, OK = "error", "plan"
    cases = [
        (CARD + "uuid='a'\n" + CARD + "uuid='a'\npci_bus_id='0:2'\n", E, "duplicate uuid"),
        (CARD + "pci_bus_id='0:1'\nuuid='a'\n" + CARD + "pci_bus_id='0:1'\nuuid='b'\n", E, "duplicate pci id"),
        ("".join(CARD + f"uuid='g{i}'\npci_bus_id='0:{i}'\n" for i in range(17)), E, "17 GPUs"),
        ("".join(CARD + f"uuid='g{i}'\npci_bus_id='0:{i}'\n" for i in range(16)), OK, "16 GPUs"),
        (CARD.replace("12288", "0"), E, "0 VRAM"), (CARD.replace("12288", "-12288"), E, "negative VRAM"),
        (CARD.replace("12288", "nan"), E, "NaN VRAM"), (CARD.replace("12288", "inf"), E, "inf VRAM"),
        (CARD.replace("12288", "'12 GB'"), E, "VRAM as text"), (CARD.replace("12288", "true"), E, "VRAM bool"),
        (CARD + "used_mib = -1\n", E, "negative used"), (CARD + "used_mib = 20000\n", E, "used > total"),
        (CARD + "used_mib = nan\n", E, "NaN used"), (CARD + "bandwidth_gbs = 0\n", E, "zero bandwidth"),
        (CARD + "bandwidth_gbs = -360\n", E, "negative bandwidth"), (CARD + "bandwidth_gbs = nan\n", E, "NaN bandwidth"),
        (CARD + "bandwidth_gbs = inf\n", E, "inf bandwidth"), (CARD + "compute_capability = 'banana'\n", E, "cc text"),
        (CARD + "compute_capability = '99.0'\n", E, "cc 99"), (CARD + "architecture = 'Banana'\n", E, "unknown arch"),
        (CARD + "architecture = 'Pascal'\n", E, "arch mismatch"), (CARD + "display = 'yes'\n", E, "display text"),
        (CARD + "pcie_width = 0\n", E, "pcie width 0"), (CARD + 'uuid = "GPU-a\\r\\ncalc.exe"\n', E, "CRLF uuid"),
        (CARD + "name = 'x'\n", E, "duplicate key"), ("[[gpu]]\nname = 'Mystery'\nvram_mib = 100\n", E, "unknown card"),
        ("[[gpu]]\nname = 5\nvram_mib = 100\n", E, "name number"), ("gpu = 5\n" + RIG_HEAD, E, "gpu not table"),
        (RIG_HEAD.replace("32", "nan"), E, "NaN RAM"), (RIG_HEAD.replace("32", "-1"), E, "negative RAM"),
        (RIG_HEAD + "ram_available_gib = 64\n", E, "available > total"), (RIG_HEAD + "physical_cores = 0\n", E, "0 cores"),
        (RIG_HEAD + "ram_bandwidth_gbs = -5\n", E, "negative RAM bandwidth"), ("os = 'plan9'\n" + RIG_HEAD, E, "unknown os"),
        (CARD.encode(), E, "no [system]"),
        ("not toml [", E, "not TOML"), (b"\xff\xfe" + b"bad", E, "not UTF-8"), (RIG_HEAD, OK, "no GPU (CPU only)"),
        (RIG_HEAD + CARD + "used_mib = 500\n", OK, "one good card"),
    ]
    return [dict(surface="rig", name=n, expect=e, data=d) for d, e, n in cases]


def run_rig(p, work):
    from phoenix_gui.hardware import load_rig
    from phoenix_gui.model import preset_model_info
    from phoenix_gui.planner import PlanSettings, make_plan

    f = work / "rig.toml"
    body = p["data"] if isinstance(p["data"], bytes) else (
        p["data"] if "[system]" in p["data"] or p["data"].startswith("not") else RIG_HEAD + p["data"]).encode()
    f.write_bytes(body)
    rig = load_rig(f)
    plan = make_plan(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), rig, PlanSettings())
    bad = [d.name for d in plan.devices if not (d.total_bytes >= 0 and math.isfinite(plan.predicted_tokens_per_s)
                                               and plan.predicted_tokens_per_s > 0)]
    if bad:
        raise AssertionError(f"nonsense plan on {bad}")
    return f"{len(rig.gpus)} GPUs, {plan.predicted_tokens_per_s:.1f} tok/s"


def kcpps_cases():
    E, OK = "error", "plan"
    base = {"contextsize": 4096, "usecuda": ["normal"], "gpulayers": 40}
    c = [({"tensor_split": [NAN, 1, 1]}, E), ({"tensor_split": [INF, 1]}, E), ({"tensor_split": [-1, 2, 2]}, E),
         ({"tensor_split": [1] * 17}, E), ({"tensor_split": "1 2 3"}, E), ({"tensor_split": [1, "x"]}, E),
         ({"tensor_split": [True, 1]}, E), ({"tensor_split": [0, 0, 0]}, OK), ({"tensor_split": [1.5, 4.5, 3]}, OK),
         ({"tensor_split": [1, 2, 3, 4]}, E), ({"gpulayers": 2 ** 31}, E), ({"gpulayers": 2 ** 63}, E),
         ({"gpulayers": -2}, E), ({"gpulayers": "all"}, E), ({"gpulayers": 1e300}, E), ({"gpulayers": NAN}, E),
         ({"gpulayers": -1}, OK), ({"gpulayers": 999}, OK), ({"quantkv": "banana"}, E), ({"quantkv": 9}, E),
         ({"quantkv": [0]}, E), ({"quantkv": 2}, OK), ({"quantkv": "q5_1"}, OK), ({"contextsize": 10}, E),
         ({"contextsize": 300000}, E), ({"contextsize": "4096"}, E), ({"contextsize": NAN}, E),
         ({"contextsize": 262144}, OK), ({"batchsize": 3}, E), ({"batchsize": 8192}, E), ({"batchsize": -1}, OK),
         ({"blasbatchsize": 1024}, OK), ({"port_param": 70000}, E), ({"port": 0}, E), ({"port_param": "5001"}, OK),
         ({"port_param": 5002}, OK), ({"host": "127.0.0.1\r\ncalc.exe"}, E), ({"host": "a b"}, E), ({"host": 5}, E),
         ({"host": "0.0.0.0"}, OK), ({"usecuda": ["7"]}, E), ({"usecuda": "0"}, E), ({"usecuda": [0, 1]}, E),
         ({"usecuda": ["normal", "1"]}, OK), ({"noflashattention": "false"}, E), ({"splitmode": "banana"}, E),
         ({"moecpu": -1}, E), ({"model_param": "a\x00b"}, E), ({"model_param": ["x\r\ny.gguf"]}, E)]
    out = [dict(surface="kcpps", name=json.dumps(d)[:70], expect=e, data=dict(base, **d)) for d, e in c]
    raw = [(b"not json", E, "not JSON"), (b"[1, 2]", E, "a list"), (b"\xff\xfe{}", E, "not UTF-8"),
           (b"[" * 100000, E, "deep nesting"), (b'{"tensor_split": [NaN]}', E, "NaN literal"), (b"{}", OK, "empty")]
    out += [dict(surface="kcpps", name=n, expect=e, raw=r) for r, e, n in raw]
    return out


def run_kcpps(p, work, state_factory):
    from phoenix_gui.backends.kcpps import read_kcpps

    f = work / "probe.kcpps"
    f.write_bytes(p["raw"] if "raw" in p else json.dumps(p["data"]).encode())
    imp = read_kcpps(f)
    st = state_factory()
    st.apply_kcpps(imp)
    plan = st.plan()
    cmd = st.command()
    if not (plan and math.isfinite(plan.predicted_tokens_per_s) and cmd.argv):
        raise AssertionError("no usable plan")
    return f"gpulayers {plan.gpulayers}, split {plan.tensor_split}"


def settings_cases():
    E, OK = "error", "plan"
    good = {"model_path": "/m/q.gguf", "context": 8192, "port": 5010}
    c = [({"gpulayers": "all"}, E), ({"cache_type": "banana"}, E), ({"context": "big"}, E), ({"context": 10}, E),
         ({"context": 1e308}, E), ({"batch": -1}, E), ({"port": 70000}, E), ({"host": "a b"}, E),
         ({"host": "x\r\ncalc.exe"}, E), ({"split": [NAN, 1]}, E), ({"split": "1 2"}, E), ({"devices": "GPU-a"}, E),
         ({"recent_models": 5}, E), ({"recent_models": [1, 2]}, E), ({"executables": ["x"]}, E),
         ({"flash_attn": "yes"}, E), ({"objective": "slowest"}, E), ({"backend": "ollama"}, E),
         ({"model_path": "a\x00b"}, E), ({"moecpu": -3}, E), ({"geometry": 12}, E), ({"unknown_key": 1}, OK),
         ({"cache_type": "q8_0", "batch": 256}, OK)]
    out = [dict(surface="settings", name=json.dumps(d)[:70], expect=e, raw=json.dumps(dict(good, **d)).encode())
           for d, e in c]
    raw = [(b"{{{ garbage", E, "not JSON"), (b"[1,2]", E, "not an object"), (b"\x00\x01", E, "binary"),
           (b'{"model_path": "/m/\xff.gguf", "context": 8192}', E, "non-UTF-8 in a value"), (b"", E, "empty file")]
    out += [dict(surface="settings", name=n, expect=e, raw=r) for r, e, n in raw]
    out.append(dict(surface="settings", name="leftover settings.json.<pid>.tmp", expect="plan", raw=b"{}", tmp=True))
    return out


def run_settings(p, work, state_factory):
    from phoenix_gui.config import load_settings

    d = work / f"cfg{abs(hash(p['name']))}"
    d.mkdir()
    f = d / "settings.json"
    f.write_bytes(p["raw"])
    if p.get("tmp"):
        (d / "settings.json.999999999.tmp").write_text("{")
    s, msg = load_settings(f)
    copies = list(d.glob("settings.damaged-*.json"))
    if msg and not (one_sentence(msg) and len(copies) == 1 and copies[0].read_bytes() == p["raw"]):
        raise AssertionError(f"data loss or unclear notice: {msg!r}, {len(copies)} copies")
    if p.get("tmp") and (d / "settings.json.999999999.tmp").exists():
        raise AssertionError("leftover temp file not cleaned")
    st = state_factory()
    st.apply_user_settings(s)
    st.plan()
    if msg:
        raise Told(msg)  # told, with the rest kept: the clear outcome for a bad file
    return "accepted"


def state_cases():
    E, OK = "error", "plan"
    c = [("set_port", 70000, E), ("set_port", 0, E), ("set_port", -1, E), ("set_port", NAN, E), ("set_port", "80a", E),
         ("set_port", 2 ** 70, E), ("set_port", 8080, OK), ("set_host", "a b", E), ("set_host", "x\r\ncalc.exe", E),
         ("set_host", "x\x00", E), ("set_host", "$(id)", E), ("set_host", "::1", OK), ("set_host", "", OK),
         ("set_batch", 0, E), ("set_batch", NAN, E), ("set_batch", INF, E), ("set_batch", 10 ** 9, E),
         ("set_batch", 2048, OK), ("set_cache_type", "banana", E), ("set_cache_type", None, E),
         ("set_cache_type", "q4_0", OK), ("set_split_text", "1 nan 1", E), ("set_split_text", "inf", E),
         ("set_split_text", "-1 2 3", E), ("set_split_text", "1 2 3 4", E), ("set_split_text", "0 0 0", E),
         ("set_split_text", "abc", E), ("set_split_text", "1e400 1", E), ("set_split_text", "1, 2, 3", OK),
         ("set_backend", "ollama", E), ("set_objective", "slowest", E), ("set_context", 10, OK),
         ("set_context", 10 ** 9, OK), ("set_gpulayers", 2 ** 40, OK), ("set_moecpu", -5, OK)]
    return [dict(surface="state", name=f"{m}({v!r})", expect=e, method=m, value=v) for m, v, e in c]


def run_state(p, state_factory):
    st = state_factory()
    getattr(st, p["method"])(p["value"])
    plan = st.plan()
    s = st.settings()
    if not (plan and 256 <= s.context and 1 <= s.port <= 65535 and math.isfinite(plan.predicted_tokens_per_s)):
        raise AssertionError(f"nonsense state {s}")
    return "accepted"


def gui_cases():
    E, OK = "error", "plan"
    c = [("host", "127.0.0.1\r\ncalc.exe", E), ("host", "a b", E), ("host", "$(reboot)", E), ("host", "300.1.1.1", E),
         ("host", "x" * 300, E), ("host", "0.0.0.0", OK), ("split_text", "1 nan 1", E), ("split_text", "1 2 3 4", E),
         ("split_text", "-1 1 1", E), ("split_text", "2 1 1", OK), ("kcpps", {"tensor_split": [NAN, 1, 1]}, E),
         ("kcpps", {"gpulayers": 2 ** 31}, E), ("kcpps", {"quantkv": "banana"}, E), ("kcpps", {"contextsize": 10}, E),
         ("kcpps", {"host": "a\r\nb"}, E), ("kcpps", {"gpulayers": 30, "tensor_split": [1, 2, 1]}, OK),
         ("model", "fifo", E), ("model", "dir", E), ("model", "empty", E), ("model", "tiny", OK)]
    return [dict(surface="gui", name=f"{k}: {v!r}"[:80], expect=e, kind=k, value=v) for k, v, e in c]


def run_gui(p, work, wiz, qapp, tiny):
    """Through the real widgets offscreen; Next is pressed to every page afterwards."""
    from phoenix_gui.ui.worker import wait_for_workers

    st = wiz.state
    wiz.go_to("model")
    kind, value = p["kind"], p["value"]
    told = ""
    before = after = None
    if kind == "host":
        wiz.go_to("launch")
        page = wiz.page("launch")
        before = st.settings()
        page.status.setVisible(False)
        page.host.setText(value)
        page.host.editingFinished.emit()
        after = st.settings()
        told = page.status.text() if page.status.isVisible() and st.host != value.strip() else ""
        if st.host == value.strip():
            return "accepted"
    elif kind == "split_text":
        wiz.go_to("split")
        page = wiz.page("split")
        before = st.settings()
        page.error.setVisible(False)
        field = page.split_edit
        field.setText(value)
        field.editingFinished.emit()
        after = st.settings()
        told = page.error.text() if page.error.isVisible() else ""
        if not told:
            return "accepted"
    elif kind == "kcpps":
        f = work / "gui.kcpps"
        f.write_text(json.dumps(dict({"contextsize": 4096, "usecuda": ["normal"]}, **value)))
        page = wiz.page("model")
        page.error.setVisible(False)
        page.import_kcpps(str(f))
        qapp.processEvents()  # a refusal that reached the last-resort handler is shown on the next turn
        told = page.error.text() if page.error.isVisible() else ""
    elif kind == "model":
        path = {"fifo": work / "gui-pipe.gguf", "dir": work, "empty": work / "empty.gguf", "tiny": tiny}[value]
        if value == "fifo" and not path.exists():
            os.mkfifo(path)
        if value == "empty":
            path.write_bytes(b"")
        page = wiz.page("model")
        page.load(str(path))
        deadline = time.monotonic() + 10
        while page.loading is not None and time.monotonic() < deadline:
            qapp.processEvents()
            time.sleep(0.01)
        if page.loading is not None:
            raise Hung(f"the model page still reads {path.name} after 10 s")
        wait_for_workers(1000)
        qapp.processEvents()
        told = st.model_error
        if told:
            wiz.go_to("context")  # Next must refuse without a model, and nothing may break
            raise Told(told)
    for key in ("context", "split", "launch"):
        wiz.go_to(key)
        qapp.processEvents()
    if st.model is None or st.plan() is None:
        raise AssertionError("the wizard has no plan after the probe")
    if told:
        if before is not None and after != before:
            diff = [k for k in before.__dataclass_fields__ if getattr(before, k) != getattr(after, k)]
            raise AssertionError(f"refused value changed the state ({', '.join(diff)})")
        raise Told(told)
    return "accepted"


def gguf_cases():
    E, OK = "error", "plan"
    c = [("fifo", E), ("dir", E), ("empty", E), ("4 bytes", E), ("not gguf", E), ("truncated header", E),
         ("version 99", E), ("big endian", E), ("dangling symlink", E), ("symlink loop", E), ("NUL in name", E),
         ("/dev/zero", E), ("/dev/null", E), ("absurd counts", E), ("tiny", OK)]
    return [dict(surface="gguf", name=n, expect=e) for n, e in c]


def run_gguf(p, work, tiny):
    import struct

    from phoenix_gui.model import read_model

    n = p["name"]
    f = work / "probe.gguf"
    for x in (f,):
        if x.is_symlink() or x.exists():
            x.unlink()
    if n == "fifo":
        os.mkfifo(f)
    elif n == "dir":
        f = work
    elif n == "empty":
        f.write_bytes(b"")
    elif n == "4 bytes":
        f.write_bytes(b"GGUF")
    elif n == "not gguf":
        f.write_bytes(b"hello" * 100)
    elif n == "truncated header":
        f.write_bytes(tiny.read_bytes()[:200])
    elif n == "version 99":
        f.write_bytes(b"GGUF" + struct.pack("<IQQ", 99, 0, 0) + b"\0" * 64)
    elif n == "big endian":
        f.write_bytes(b"GGUF" + struct.pack(">IQQ", 3, 0, 0) + b"\0" * 64)
    elif n == "dangling symlink":
        f.symlink_to(work / "nowhere.gguf")
    elif n == "symlink loop":
        f.symlink_to(f)
    elif n == "NUL in name":
        f = Path(str(work / "a\x00b.gguf"))
    elif n.startswith("/dev/"):
        f = Path(n)
    elif n == "absurd counts":
        f.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2 ** 60, 2 ** 60) + b"\0" * 64)
    elif n == "tiny":
        f = tiny
    m = read_model(f)
    return f"{m.n_layer} layers"


class Hung(Exception):
    """A read that never finished (seen from the GUI thread, which must not block itself)."""


class Told(Exception):
    """The user was shown this sentence (a notice or a field's refusal) and nothing went wrong."""


def _refusals() -> tuple:
    """The error types that carry a sentence for the user (older checkouts had one per boundary,
    so the probe can also measure the code before the validation layer)."""
    from phoenix_gui.backends.kcpps import KcppsError
    from phoenix_gui.hardware import RigFileError
    from phoenix_gui.model import ModelFileError
    from phoenix_gui.session import SettingError

    try:
        from phoenix_gui.validate import InputError
    except ImportError:
        InputError = SettingError  # noqa: N806
    return Told, InputError, ModelFileError, KcppsError, RigFileError, SettingError


BUILTIN = ("rig", "kcpps", "settings", "state", "gui", "gguf")


def surface_cases(surface: str) -> list[dict]:
    builtin = {"rig": rig_cases, "kcpps": kcpps_cases, "settings": settings_cases, "state": state_cases,
               "gui": gui_cases, "gguf": gguf_cases}
    if surface in builtin:
        return builtin[surface]()
    cases = plugin_surfaces()[surface][0]()
    for c in cases:
        c.setdefault("surface", surface)
    return cases


def worker(surface: str) -> int:
    """Run one in-process surface; print one JSON line per probe (flushed, so a crash loses only the rest)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(tempfile.mkdtemp(prefix=f"probe-{surface}-"))
    os.environ["PHOENIX_CONFIG_DIR"] = str(work / "config")
    os.environ["PHOENIX_DATA_DIR"] = str(work / "data")
    from phoenix_gui.hardware import demo_rig_path, load_rig
    from phoenix_gui.model import preset_model_info, write_skeleton
    from phoenix_gui.session import WizardState
    refused = _refusals()

    tiny = write_skeleton("tiny-llama-f16", work / "tiny.gguf")
    rig = load_rig(demo_rig_path())
    model = preset_model_info("qwen2.5-7b-instruct-q4_k_m")

    def state_factory():
        st = WizardState(rig)
        st.set_model(model, None)  # opens on the fastest plan, which may leave cards out: tick them all again
        st.apply(st.settings().with_(devices=tuple(range(len(rig.gpus))), tensor_split=None, gpulayers=None))
        return st

    wiz = qapp = None
    if surface == "gui":
        from phoenix_gui.ui.app import make_app, make_wizard

        qapp = make_app()
        wiz = make_wizard(demo=True, persist=False, measure=False)
        wiz.resize(1280, 860)
        wiz.show()
    from probe_kit import Defect

    cases = surface_cases(surface)
    plugin_run = None if surface in BUILTIN else plugin_surfaces()[surface][1]
    for p in cases:
        box: dict = {}

        def call():
            try:
                if surface == "rig":
                    box["ok"] = run_rig(p, work)
                elif surface == "kcpps":
                    box["ok"] = run_kcpps(p, work, state_factory)
                elif surface == "settings":
                    box["ok"] = run_settings(p, work, state_factory)
                elif surface == "state":
                    box["ok"] = run_state(p, state_factory)
                elif surface == "gguf":
                    box["ok"] = run_gguf(p, work, tiny)
                elif plugin_run is not None:
                    box["ok"] = plugin_run(p, work)
                else:
                    box["ok"] = run_gui(p, work, wiz, qapp, tiny)
            except Hung as e:
                box["hang"] = str(e)
            except Defect as e:
                box["defect"] = str(e)
            except refused as e:
                box["error"] = str(e)
            except Exception as e:  # noqa: BLE001 - a defect, reported
                box["exc"] = f"{type(e).__name__}: {e}"

        if surface == "gui":
            call()  # widgets live on this thread; a hang is caught by the parent's timeout
        else:
            t = threading.Thread(target=call, daemon=True)
            t.start()
            t.join(PROBE_TIMEOUT_S)
            if t.is_alive():
                box = {"hang": f"no answer in {PROBE_TIMEOUT_S} s"}
                for fifo in work.glob("*.gguf"):
                    if fifo.is_fifo():
                        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let it go
        if "ok" in box:
            got, detail = "plan", box["ok"]
        elif "error" in box:
            got, detail = ("error", box["error"]) if one_sentence(box["error"]) else ("traceback", box["error"])
        elif "exc" in box:
            got, detail = "traceback", box["exc"]
        elif "defect" in box:
            got, detail = "defect", box["defect"]
        else:  # "hang"
            got, detail = "hang", box["hang"]
        print(json.dumps({"surface": surface, "name": p["name"], "expect": p["expect"], "got": got,
                          "detail": str(detail)}), flush=True)
    if wiz is not None:
        wiz.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


def run_surface(surface: str) -> list[dict]:
    """A worker child for one surface; probes it never reported (crash, hang) are defects."""
    names = surface_cases(surface)
    try:
        r = subprocess.run([sys.executable, __file__, "--worker", surface], capture_output=True, text=True,
                           timeout=PROBE_TIMEOUT_S * len(names) + 60, cwd=ROOT)
        out, why = r.stdout, (f"signal {-r.returncode}" if r.returncode < 0 else
                              f"worker exit {r.returncode}: {r.stderr.strip()[-200:]}")
        crash = "crash"
    except subprocess.TimeoutExpired as e:
        out, why, crash = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "hang", "hang"
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for p in names[len(rows):]:
        rows.append({"surface": surface, "name": p["name"], "expect": p["expect"], "got": crash, "detail": why})
    return rows


def leftover_processes(before: set[int]) -> list[str]:
    import psutil

    me = psutil.Process()
    return [f"{c.pid} {c.name()}" for c in me.children(recursive=True) if c.pid not in before and c.is_running()
            and c.status() != psutil.STATUS_ZOMBIE]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--surface", action="append", help="only these surfaces (cli, rig, kcpps, settings, state, gui, gguf, "
                    "and those of PLUGIN_MODULES)")
    ap.add_argument("--verbose", action="store_true", help="list every probe, not only the defects")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    import psutil

    before = {c.pid for c in psutil.Process().children(recursive=True)}
    surfaces = args.surface or ["cli", *BUILTIN, *plugin_surfaces()]
    rows: list[dict] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="probe-cli-") as d:
        work = Path(d)
        from phoenix_gui.model import write_skeleton

        tiny = write_skeleton("tiny-llama-f16", work / "tiny.gguf")
        jobs = []
        with ThreadPoolExecutor(max_workers=2) as pool:
            if "cli" in surfaces:
                for p in cli_probes(work, tiny):
                    jobs.append((p, pool.submit(run_cli, p)))
            inproc = [s for s in surfaces if s != "cli"]
            futs = [pool.submit(run_surface, s) for s in inproc]
            for p, f in jobs:
                got, detail = f.result()
                rows.append({"surface": p["surface"], "name": p["name"], "expect": p["expect"], "got": got,
                             "detail": detail})
            for f in futs:
                rows.extend(f.result())
    left = leftover_processes(before)
    if left:
        rows.append({"surface": "process", "name": "processes left running", "expect": "none", "got": "leftover",
                     "detail": ", ".join(left)})
    clear = defects = 0
    by_surface: dict[str, list[int]] = {}
    lines = []
    for r in rows:
        ok, why = verdict(r["expect"], r["got"], r["detail"])
        clear += ok
        defects += not ok
        by_surface.setdefault(r["surface"], [0, 0])[0 if ok else 1] += 1
        if not ok or args.verbose:
            owner = " [part B]" if r["surface"] in PART_B else ""
            lines.append(f"{'ok ' if ok else 'DEFECT'} {r['surface']:8s} {r['name'][:70]:70s} {why or r['got']}{owner}")
    print(f"{'surface':10s} {'probes':>6s} {'clear':>6s} {'defects':>7s}")
    for s, (c, k) in by_surface.items():
        print(f"{s:10s} {c + k:6d} {c:6d} {k:7d}")
    for line in lines:
        print(line)
    print(f"({time.perf_counter() - t0:.0f} s)")
    print(f"probes {len(rows)} | clear {clear} | defects {defects}")
    return 1 if defects else 0


if __name__ == "__main__":
    sys.exit(main())
