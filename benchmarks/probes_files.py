"""Probe surfaces for the files a user is sent or Phoenix writes beside a tune (see probe_kit.py):
"calibration" (imported and stored calibration files), "export" (where a calibration may be written),
"slices" (the tune's temporary slice folders)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from probe_kit import Defect

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "fake_koboldcpp.py"
E, OK = "error", "plan"


def _good(**over) -> dict:
    d = {"gpu_scale": {"GPU-a": 1.2}, "cpu_scale": 0.9, "hop_scale": 1.0, "mem_extra_mib": {"GPU-a": 40.0},
         "runs": 4, "created": time.time() - 60, "model": "m", "per_layer_ms": {"CPU": 3.0},
         "key": {"gpus": ["GPU-a"], "driver": "550.1", "engine": "koboldcpp", "version": "1.115.1"}}
    d.update(over)
    return d


def _api():
    """(import_from, find, folder, export_to): today's, or the code before issue 24 (for the before count)."""
    try:
        from phoenix_gui.backends import calibrations as c

        return c.import_from, c.find, c.folder, c.export_to
    except ImportError:
        from phoenix_gui.backends import tune as c
        from phoenix_gui.storage import data_dir
        from phoenix_gui.validate import InputError

        def import_from(path):  # its CLI showed a ValueError's sentence as a refusal
            try:
                return c.import_from(path)
            except InputError:
                raise
            except ValueError as e:
                raise InputError(str(e)) from None

        return import_from, c.find, lambda: data_dir() / "calibrations", c.export_to


def _slice_api():
    """(SLICE_PREFIX, remove_stale_slices or None before issue 24)."""
    from phoenix_gui.backends import tune

    return getattr(tune, "SLICE_PREFIX", "phoenix-slices-"), getattr(tune, "remove_stale_slices", None)


def _key(engine: str) -> dict:
    return {"gpus": [], "driver": "", "engine": engine, "version": "1"}


def _tree(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


# --- calibration files ---

CALIBRATION = [
    ("engine ../../x", _good(key=_key("../../escaped")), E), ("engine a/b", _good(key=_key("a/b")), E),
    ("engine absolute path", _good(key=_key("/tmp/probe-escaped")), E), ("engine 5000 chars", _good(key=_key("x" * 5000)), E),
    ("engine NUL", _good(key=_key("koboldcpp\x00")), E), ("created NaN", _good(created=float("nan")), E),
    ("created 1e20", _good(created=1e20), E), ("mem_extra Infinity", _good(mem_extra_mib={"GPU-a": float("inf")}), E),
    ("mem_extra 1e12", _good(mem_extra_mib={"GPU-a": 1e12}), E), ("cpu_scale NaN", _good(cpu_scale=float("nan")), E),
    ("gpu_scale 0", _good(gpu_scale={"GPU-a": 0}), E), ("runs -1", _good(runs=-1), E), ("runs 1e30", _good(runs=10 ** 30), E),
    ("per_layer_ms inf", _good(per_layer_ms={"CPU": float("inf")}), E), ("40 GPUs", _good(gpu_scale={str(i): 1.0 for i in range(40)}), E),
    ("escape in a name", _good(gpu_scale={"GPU-\x1b]0;pwned\x07": 1.0}), E), ("version CRLF", _good(key={**_key("koboldcpp"), "version": "1\r\nx"}), E),
    ("not an object", [1, 2], E), ("sound", _good(), OK),
]
RAW = [("not JSON", b"{", E), ("not UTF-8", b'{"model": "caf\xe9"}', E), ("empty", b"", E),
       ("100000-deep list", b"[" * 100_000 + b"]" * 100_000, E), ("5000-digit number", b'{"runs": ' + b"9" * 5000 + b"}", E)]
SPECIAL = [("FIFO", E), ("/dev/zero", E), ("200 MB file", E), ("a folder", E), ("missing file", E), ("full disk", E)]
STORED = [("stored created 1e20", _good(created=1e20)), ("stored mem_extra 1e12", _good(mem_extra_mib={"GPU-a": 1e12})),
          ("stored ../ engine", _good(key=_key("../x"))), ("stored garbage", "{nope")]


def calibration_cases() -> list[dict]:
    out = [dict(name=f"import: {n}", expect=e, data=d) for n, d, e in CALIBRATION]
    out += [dict(name=f"import: {n}", expect=e, raw=r) for n, r, e in RAW]
    out += [dict(name=f"import: {n}", expect=e, special=n) for n, e in SPECIAL]
    out += [dict(name=f"plan with {n}", expect=OK, stored=d) for n, d in STORED]
    return out


def run_calibration(p: dict, work: Path) -> str:
    import_from, find, folder, _ = _api()
    from phoenix_gui.hardware import demo_rig_path, load_rig
    from phoenix_gui.model import preset_model_info
    from phoenix_gui.planner import PlanSettings, make_plan
    from phoenix_gui.planner.calibration import with_calibration

    if "stored" in p:  # a file in the data folder that went bad: set aside, said, and plans go on
        store = folder()
        store.mkdir(parents=True, exist_ok=True)
        bad = store / "koboldcpp-00112233aabbccdd.json"
        bad.write_text(p["stored"] if isinstance(p["stored"], str) else json.dumps(p["stored"]))
        rig = load_rig(demo_rig_path())
        cal, note = find(rig, "koboldcpp")
        plan = make_plan(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), with_calibration(rig, cal),
                         PlanSettings(context=4096))
        if bad.exists() or "set aside" not in note:
            raise Defect(f"the bad file was not set aside ({note!r})")
        if "set aside" in find(rig, "koboldcpp")[1]:
            raise Defect("the set-aside was said twice")
        return f"{plan.predicted_tokens_per_s:.1f} tokens/s; {note}"
    src = work / "sent.json"
    for f in (src,):
        if f.is_symlink() or f.exists():
            f.unlink()
    special = p.get("special")
    if special == "FIFO":
        os.mkfifo(src)
    elif special == "/dev/zero":
        src = Path("/dev/zero")
    elif special == "200 MB file":
        with open(src, "wb") as f:
            f.truncate(200 << 20)
    elif special == "a folder":
        src = work
    elif special == "missing file":
        src = work / "nothing-here.json"
    elif special == "full disk":
        return _full_disk(work)
    elif "raw" in p:
        src.write_bytes(p["raw"])
    else:
        src.write_text(json.dumps(p["data"]))
    before = _tree(work)
    try:
        cal = import_from(str(src))
    finally:
        made = {x for x in _tree(work) - before if not x.startswith(str(work / "data"))}
        if made or Path("/tmp/probe-escaped").exists():
            raise Defect(f"files written outside the data folder: {sorted(made)[:3]}")
    return f"kept {cal.runs} runs for {cal.key['engine']}"


def _full_disk(work: Path) -> str:
    """A real small disk (tmpfs, needs root) filled up: one sentence and no temporary file left."""
    import_from = _api()[0]
    disk = work / "small-disk"
    disk.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], capture_output=True).returncode:
        from phoenix_gui.validate import InputError

        raise InputError("(not root: no small disk to fill; counted as refused)")
    old = os.environ.get("PHOENIX_DATA_DIR")
    try:
        os.environ["PHOENIX_DATA_DIR"] = str(disk)
        try:
            with open(disk / "filler", "wb") as f:
                f.write(b"\0" * 65536)
        except OSError:
            pass
        src = work / "sent.json"
        src.write_text(json.dumps(_good(per_layer_ms={f"device {i:02d} {'x' * 150}": 1.0 for i in range(17)})))
        try:
            import_from(str(src))
        finally:
            left = [x.name for x in disk.rglob("*.tmp")]
            if left:
                raise Defect(f"left behind: {left}")
        return "written on a full disk?"
    finally:
        os.environ["PHOENIX_DATA_DIR"] = old or ""
        subprocess.run(["umount", str(disk)], check=False)


# --- exports ---

EXPORT = [("through a symlink", E), ("dangling symlink", E), ("over the model (.gguf)", E), ("over a renamed model", E),
          ("missing folder", E), ("existing file, no --force", E), ("existing file, --force", OK), ("new file", OK),
          ("a folder", E), ("NUL in the name", E), ("read-only folder", E)]


def export_cases() -> list[dict]:
    return [dict(name=n, expect=e) for n, e in EXPORT]


def run_export(p: dict, work: Path) -> str:
    export_to = _api()[3]
    from phoenix_gui.model import write_skeleton
    from phoenix_gui.hardware.calibration import Calibration

    cal = Calibration.from_dict(_good())
    d = work / "export" / p["name"].replace(" ", "_").replace(",", "").replace("-", "")  # a fresh folder each
    d.mkdir(parents=True, exist_ok=True)
    victim = d / "victim.txt"
    victim.write_text("keep me")
    model = d / "model.gguf"
    if not model.exists():
        write_skeleton("tiny-llama-f16", model)
    n, force = p["name"], True
    target = d / "cal.json"
    for f in (target, d / "created-by-link.json", d / "model.bak"):
        if f.is_symlink() or f.exists():
            f.unlink()
    if n == "through a symlink":
        target.symlink_to(victim)
    elif n == "dangling symlink":
        target.symlink_to(d / "created-by-link.json")
    elif n.startswith("over the model"):
        target = model
    elif n == "over a renamed model":
        target = d / "model.bak"
        target.write_bytes(model.read_bytes())
    elif n == "missing folder":
        target = d / "nope" / "cal.json"
    elif n.startswith("existing file"):
        target.write_text("old")
        force = n.endswith(", --force")
    elif n == "a folder":
        target = d
    elif n == "NUL in the name":
        target = str(d / "a\x00b.json")
    elif n == "read-only folder":
        ro = d / "ro"
        ro.mkdir(exist_ok=True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode:
            os.chmod(ro, 0o555)
        target = ro / "cal.json"
    try:
        export_to(cal, target, force=force)
    finally:
        if n == "read-only folder":
            subprocess.run(["umount", str(d / "ro")], check=False, capture_output=True)
        if victim.read_text() != "keep me" or (d / "created-by-link.json").exists():
            raise Defect("wrote through a link")
        if model.read_bytes()[:4] != b"GGUF" or (n == "over a renamed model" and (d / "model.bak").read_bytes()[:4] != b"GGUF"):
            raise Defect("wrote over a model")
    return f"wrote {Path(target).name}"


# --- the tune's slice folders ---

SLICES = [("stale folder of a dead tune", OK), ("folder of a running tune kept", OK), ("a link named like a stale folder", OK),
          ("SIGTERM mid-tune", OK)]


def slices_cases() -> list[dict]:
    return [dict(name=n, expect=e) for n, e in SLICES]


def run_slices(p: dict, work: Path) -> str:
    SLICE_PREFIX, remove_stale_slices = _slice_api()
    if remove_stale_slices is None:
        remove_stale_slices = lambda tmp: None  # noqa: E731 - the code before issue 24 removed none
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    n = p["name"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    if n == "stale folder of a dead tune":
        stale = tmp / f"{SLICE_PREFIX}{dead.pid}-x"
        stale.mkdir()
        remove_stale_slices(tmp)
        if stale.exists():
            raise Defect("a dead tune's folder was kept")
        return "removed"
    if n == "folder of a running tune kept":
        live = tmp / f"{SLICE_PREFIX}{os.getpid()}-x"
        live.mkdir(exist_ok=True)
        remove_stale_slices(tmp)
        if not live.exists():
            raise Defect("a running tune's folder was removed")
        return "kept"
    if n == "a link named like a stale folder":
        victim = work / "victim"
        victim.mkdir(exist_ok=True)
        (victim / "keep").write_text("x")
        (tmp / f"{SLICE_PREFIX}{dead.pid}-link").symlink_to(victim)
        remove_stale_slices(tmp)
        if not (victim / "keep").exists():
            raise Defect("followed a link and removed what it points to")
        return "left alone"
    return _sigterm_tune(work)


def _sigterm_tune(work: Path) -> str:
    SLICE_PREFIX = _slice_api()[0]
    from phoenix_gui.hardware import demo_rig_path
    from phoenix_gui.model import write_skeleton

    import psutil

    tmp = work / "tmp-sigterm"
    tmp.mkdir(exist_ok=True)
    model = write_skeleton("qwen2.5-7b-instruct-q4_k_m", work / "q7.gguf")
    env = dict(os.environ, TMPDIR=str(tmp), FAKE_KCPP_LOAD_S="60", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "phoenix_gui", "tune", str(model), "--rig", str(demo_rig_path()),
                             "--exe", str(FAKE), "--ctx", "2048"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 15
    while not list(tmp.glob(SLICE_PREFIX + "*")) or not psutil.Process(proc.pid).children(recursive=True):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise Defect(f"the tune did not get to its runs: {proc.communicate()[1][-200:]}")
        time.sleep(0.1)
    engines = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=15)[1]
    _, alive = psutil.wait_procs(engines, timeout=5)
    if list(tmp.glob(SLICE_PREFIX + "*")) or alive:
        raise Defect(f"left behind: {[x.name for x in tmp.iterdir()]} {[a.pid for a in alive]}")
    return err.strip().splitlines()[-1]


SURFACES = {"calibration": (calibration_cases, run_calibration), "export": (export_cases, run_export),
            "slices": (slices_cases, run_slices)}
