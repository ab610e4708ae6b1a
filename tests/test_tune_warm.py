"""The tune keeps the model in the OS file cache between runs: it reads the file once before the first run
(only the data: a sparse file's holes cost nothing), never turns an engine's memory mapping off, and skips
the read when RAM could not hold the file. Residency is checked with the kernel's own mincore (Linux)."""

import ctypes
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from phoenix_gui.backends import tune as tune_mod
from phoenix_gui.backends.file_warmer import FileWarmer
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.backends.tune import Tuner
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import read_model
from phoenix_gui.planner import PlanSettings

FAKE = str(Path(__file__).with_name("fake_koboldcpp.py"))
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore and fadvise are Linux's")


def resident(path: Path) -> float:
    """The fraction of the file's pages in the OS file cache (mincore on a read-only mapping)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    page = os.sysconf("SC_PAGE_SIZE")
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        assert addr not in (None, ctypes.c_void_p(-1).value)
        vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
        assert libc.mincore(addr, size, vec) == 0
        libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in vec) / len(vec)


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def wait(w: FileWarmer, timeout=60.0) -> None:
    end = time.monotonic() + timeout
    while not w.done:
        assert time.monotonic() < end
        time.sleep(0.01)


@linux
def test_the_warmer_puts_the_whole_file_in_the_os_cache(tmp_path):
    f = tmp_path / "dense.gguf"
    f.write_bytes(np.random.default_rng(0).integers(0, 256, 48 << 20, dtype=np.uint8).tobytes())
    evict(f)
    if resident(f) > 0.5:
        pytest.skip("this kernel keeps the file cached after POSIX_FADV_DONTNEED")
    w = FileWarmer(str(f))
    wait(w)
    assert w.error == "" and w.read_bytes == w.size == w.data_bytes == 48 << 20 and w.seconds > 0
    assert resident(f) > 0.95


@linux
def test_a_sparse_file_costs_only_its_data(tmp_path):
    f = tmp_path / "sparse.gguf"
    with open(f, "wb") as fh:
        fh.write(b"GGUF" + bytes(4092))
        fh.seek(8 << 30)  # an 8 GiB hole, as the test skeletons have
        fh.write(b"end")
    w = FileWarmer(str(f))
    wait(w, timeout=10)  # reading the hole itself would take tens of seconds here
    assert w.error == "" and w.read_bytes == w.size and w.data_bytes < 1 << 20 and w.seconds < 5


def test_stop_ends_the_read_at_once(tmp_path):
    f = tmp_path / "big.gguf"
    f.write_bytes(np.random.default_rng(1).integers(0, 256, 64 << 20, dtype=np.uint8).tobytes())
    w = FileWarmer(str(f))
    w.stop()
    assert w.done


def test_a_missing_file_is_one_sentence_for_the_run_to_report(tmp_path):
    w = FileWarmer(str(tmp_path / "gone.gguf"))
    wait(w)
    assert w.size == 0 and w.error in ("", "No such file or directory")


@pytest.fixture
def q7(skeletons, monkeypatch):
    path = skeletons("qwen2.5-7b-instruct-q4_k_m")
    rig = load_rig(demo_rig_path())
    monkeypatch.setenv("FAKE_KCPP_COST_LAW", json.dumps({
        "gpus": [[g.uuid, ms] for g, ms in zip(rig.gpus, (3.0, 1.2, 0.8))], "cpu_ms": 6.0, "hop_ms": 0.5,
        "base_ms": 1.0, "layers": 29, "output_x": 3.19}))
    return rig, read_model(path), str(path)


def first_launch(t: Tuner, timeout=30.0):
    end = time.monotonic() + timeout
    while t._m is None:
        assert time.monotonic() < end, t.message
        assert t.poll()
        time.sleep(0.01)
    return t._m


def test_the_file_is_read_before_the_first_run_and_mmap_is_left_as_the_engine_has_it(q7):
    rig, model, path = q7
    t = Tuner(model, rig, path, PlanSettings(context=2048, port=free_port()), FAKE, version="1.115.1", max_runs=2)
    t.start()
    assert t.warmer is not None and t._m is None
    assert t.message == "Reading the model file once, so that every run loads it from the OS file cache…"
    m = first_launch(t)
    assert t.warmer.done and t.warmer.read_bytes == os.path.getsize(path)
    # koboldcpp 1.115.1 maps the file only with --usemmap, and with it skips repacking the CPU's weights:
    # the tune leaves it as the user has it (off by default) and relies on the OS cache of its reads
    assert "--usemmap" not in m.launch.command.argv
    t.cancel()
    t = Tuner(model, rig, path, PlanSettings(context=2048, port=free_port(), use_mmap=True), FAKE, version="1.115.1")
    t.start()
    assert "--usemmap" in first_launch(t).launch.command.argv
    t.cancel()


def test_llama_server_runs_keep_its_memory_mapping(q7):
    rig, model, path = q7
    from phoenix_gui.engines import engine_named

    exe = engine_named("llama-server").find()
    t = Tuner(model, rig, path, PlanSettings(context=2048, backend="llama-server", port=free_port()), exe,
              version="b0", max_runs=2)
    t.start()
    try:
        argv = first_launch(t).launch.command.argv
    finally:
        t.cancel()
    assert not {"--no-mmap", "-lm", "--load-mode"} & set(argv)  # llama-server maps the file by default


def test_a_file_ram_cannot_hold_is_not_read(q7, monkeypatch):
    rig, model, path = q7
    monkeypatch.setattr(tune_mod, "_ram_available", lambda: os.path.getsize(path))  # 80 % of it is too little
    t = Tuner(model, rig, path, PlanSettings(context=2048, port=free_port()), FAKE, version="1.115.1", max_runs=2)
    t.start()
    try:
        assert t.warmer is None and t._m is not None  # straight to the first run
    finally:
        t.cancel()


def test_the_cli_says_it_reads_the_file_first(q7, monkeypatch, capsys):
    from phoenix_gui.cli import main

    rig, model, path = q7
    monkeypatch.setattr(tune_mod, "_ram_available", lambda: 1 << 50)  # whatever this machine has
    rc = main(["tune", path, "--rig", str(demo_rig_path()), "--exe", FAKE, "--ctx", "2048", "--port", str(free_port()),
               "--max-runs", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "phoenix: Reading the model file once, so that every run loads it from the OS file cache…" in err
    assert "MiB of data in " in out and "so every run loaded it from the OS file cache." in out  # the table's line
    assert "about" in err and "s left" in err  # time left after each run
