"""The one validation layer (phoenix_gui/validate.py) at every boundary: rig files, .kcpps imports,
CLI plan arguments, the planner's entry, the wizard's setters, and non-regular files (a real FIFO).
Every bad value is one InputError sentence; none becomes a plan."""

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings, example
from hypothesis import strategies as st

from phoenix_gui import validate as v
from phoenix_gui.backends.kcpps import KcppsError, read_kcpps
from phoenix_gui.cli import main as cli_main
from phoenix_gui.config import load_settings
from phoenix_gui.hardware import RigFileError, demo_rig_path, load_rig
from phoenix_gui.model import ModelFileError, preset_model_info, read_model
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.session import SettingError, WizardState

RIG_HEAD = "[system]\nram_gib = 32\n"
CARD = "[[gpu]]\nname = 'NVIDIA GeForce RTX 3060'\nvram_mib = 12288\n"


def one_sentence(msg: str) -> bool:
    return msg and "\n" not in msg and "Traceback" not in msg and msg.rstrip().endswith((".", ")"))


# --- the shared checks ---

@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.booleans() | st.text(max_size=5) | st.none())
def test_number_accepts_only_finite_reals_in_range(x):
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x)) and 0 <= x <= 10
    try:
        got = v.number(x, "X", 0, 10)
    except v.InputError as e:
        assert not ok and one_sentence(str(e))
    else:
        assert ok and got == float(x)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5), max_size=20),
       st.integers(0, 20))
def test_split_is_finite_nonnegative_not_all_zero_and_one_per_device(vals, n):
    ok = (bool(vals) and all(math.isfinite(x) and x >= 0 for x in vals) and sum(vals) > 0
          and len(vals) <= min(n, v.MAX_DEVICES))
    try:
        got = v.split(vals, n)
    except v.InputError as e:
        assert not ok and one_sentence(str(e))
    else:
        # what reaches the engine: scaled when the largest is outside 0.01-1e6, rounded (validate.split_weights)
        assert ok and got == tuple(v.split_weights(vals)) and all(math.isfinite(x) for x in got)
        if len(set(vals)) == 1:
            assert len(set(got)) == 1 and got[0] > 0  # equal weights stay equal whatever their size


@given(st.lists(st.integers(-2, 20), max_size=20), st.integers(0, 20))
def test_devices_are_unique_on_the_rig_and_at_most_16(ids, n):
    ok = all(0 <= i < n for i in ids) and len(set(ids)) == len(ids) and len(ids) <= 16
    try:
        assert v.devices(ids, n) == tuple(ids) and ok
    except v.InputError as e:
        assert not ok and one_sentence(str(e))


@pytest.mark.parametrize("h", ["127.0.0.1", "0.0.0.0", "localhost", "my-pc.lan", "::1", "[::1]", "fe80::1%eth0",
                               "gpu-box", "a.b.c."])
def test_valid_hosts(h):
    assert v.host(h) == h


@pytest.mark.parametrize("h", ["", " ", "a b", "127.0.0.1\r\ncalc.exe", "x\x00", "host;rm -rf", "a&b", "$(id)", "`id`",
                               "300.1.1.1", "1.2.3", "-x", "ex ample.com", "ünï.com", "a" * 300, ":::::", "a..b", 5, None])
def test_invalid_hosts(h):
    with pytest.raises(v.InputError) as e:
        v.host(h)
    assert one_sentence(str(e.value))


@given(st.integers(-10, 70000) | st.floats(allow_nan=True) | st.text(max_size=6))
@example("¹")  # str.isdigit() says yes, int() says no: found by hypothesis
@example("٣٠٠٠")
def test_port(p):
    try:
        got = v.port(p)
    except v.InputError:
        if isinstance(p, int) or (isinstance(p, float) and p.is_integer()):
            assert not 1 <= p <= 65535
        return
    assert 1 <= got <= 65535


def test_timeout_nan_inf_negative_are_refused():
    for bad in (float("nan"), float("inf"), -1.0, 0.0):
        with pytest.raises(v.InputError):
            v.timeout(bad)
    assert v.timeout(30) == 30.0


# --- rig files ---

@pytest.mark.parametrize("body,words", [
    (CARD + "uuid = 'GPU-x'\n" + CARD + "uuid = 'GPU-x'\npci_bus_id = '00000000:09:00.0'\n", "same uuid"),
    (CARD + "pci_bus_id = '00000000:01:00.0'\n" + CARD + "pci_bus_id = '00000000:01:00.0'\nuuid='b'\n", "same pci_bus_id"),
    ("".join(CARD + f"uuid = 'g{i}'\npci_bus_id = '0:{i}'\n" for i in range(17)), "at most 16"),
    ("[[gpu]]\nname = 'NVIDIA GeForce RTX 3060'\nvram_mib = 0\n", "vram_mib must be between"),
    ("[[gpu]]\nname = 'NVIDIA GeForce RTX 3060'\nvram_mib = -12288\n", "vram_mib must be between"),
    (CARD + "used_mib = -1\n", "used_mib must be at least 0"),
    (CARD + "used_mib = 20000\n", "uses more memory"),
    (CARD + "bandwidth_gbs = 0\n", "bandwidth_gbs must be between"),
    (CARD + "bandwidth_gbs = -360\n", "bandwidth_gbs must be between"),
    (CARD + "bandwidth_gbs = nan\n", "finite"),
    (CARD + "bandwidth_gbs = inf\n", "finite"),
    ("[[gpu]]\nname = 'NVIDIA GeForce RTX 3060'\nvram_mib = inf\n", "finite"),
    ("[[gpu]]\nname = 'NVIDIA GeForce RTX 3060'\nvram_mib = '12 GB'\n", "must be a number"),
    (CARD + "compute_capability = 'banana'\n", "compute_capability"),
    (CARD + "architecture = 'Banana'\n", "does not know"),
    (CARD + "architecture = 'Pascal'\n", "is Ampere"),
    (CARD + "display = 'yes'\n", "true or false"),
    (CARD + "pcie_gen = 99\n", "pcie_gen"),
    ("gpu = 5\n[system]\nram_gib = 8\n", "[[gpu]] table"),
])
def test_bad_rig_files_are_one_sentence(tmp_path, body, words):
    p = tmp_path / "rig.toml"
    head = "" if "[system]" in body else RIG_HEAD
    p.write_text(head + body)
    with pytest.raises(RigFileError) as e:
        load_rig(p)
    assert words in str(e.value) and one_sentence(str(e.value))
    assert isinstance(e.value, v.InputError)


@pytest.mark.parametrize("system", ["ram_gib = nan", "ram_gib = -8", "ram_gib = 0", "ram_gib = 8\nram_available_gib = 9",
                                    "ram_gib = 8\nram_bandwidth_gbs = -1", "ram_gib = 8\nphysical_cores = 0",
                                    "ram_gib = true"])
def test_bad_system_tables(tmp_path, system):
    p = tmp_path / "rig.toml"
    p.write_text(f"[system]\n{system}\n" + CARD)
    with pytest.raises(RigFileError):
        load_rig(p)


def test_a_good_rig_still_loads(tmp_path):
    p = tmp_path / "rig.toml"
    p.write_text(RIG_HEAD + CARD + "uuid = 'a'\n" + CARD + "uuid = 'b'\npci_bus_id = '00000000:02:00.0'\n")
    rig = load_rig(p)
    assert len(rig.gpus) == 2 and rig.gpus[0].architecture == "Ampere"


# --- .kcpps ---

SEED = {"model_param": "/m.gguf", "usecuda": ["normal"], "gpulayers": 40, "tensor_split": [1.5, 4.5, 3],
        "contextsize": 4096, "quantkv": "f16", "batchsize": 512, "port_param": 5001, "host": ""}


@pytest.mark.parametrize("change,words", [
    ({"contextsize": 100}, "contextsize"), ({"contextsize": 300000}, "contextsize"), ({"contextsize": "4k"}, "contextsize"),
    ({"contextsize": 4096.5}, "contextsize"),
    ({"batchsize": 500}, "not one koboldcpp accepts"), ({"batchsize": 8192}, "not one koboldcpp accepts"),
    ({"batchsize": 0}, "not one koboldcpp accepts"),
    ({"gpulayers": 2 ** 31}, "gpulayers"), ({"gpulayers": -5}, "gpulayers"), ({"gpulayers": "all"}, "gpulayers"),
    ({"gpulayers": 1e300}, "gpulayers"),
    ({"tensor_split": [float("nan"), 1]}, "finite"), ({"tensor_split": [float("inf")]}, "finite"),
    ({"tensor_split": [-1, 2]}, "at least 0"), ({"tensor_split": [1] * 17}, "at most 16"),
    ({"tensor_split": "1 2"}, "list of numbers"), ({"tensor_split": [1, "a"]}, "number"),
    ({"quantkv": "banana"}, "quantkv"), ({"quantkv": 7}, "quantkv"), ({"quantkv": True}, "quantkv"),
    ({"port_param": 70000}, "port"), ({"port": 0}, "port"), ({"port_param": "x"}, "port"),
    ({"host": "127.0.0.1\r\ncalc.exe"}, "not a host"), ({"host": "a b"}, "not a host"), ({"host": 5}, "host"),
    ({"usecuda": ["7"]}, "usecuda"), ({"usecuda": "0"}, "usecuda"), ({"usecuda": [0]}, "usecuda"),
    ({"noflashattention": "false"}, "true or false"), ({"splitmode": "banana"}, "splitmode"),
    ({"moecpu": -1}, "moecpu"), ({"model_param": "a\x00b"}, "model path"), ({"model_param": 5}, "model path"),
])
def test_kcpps_values_follow_koboldcpps_rules(tmp_path, change, words):
    k = tmp_path / "bad.kcpps"
    k.write_text(json.dumps(dict(SEED, **change)))
    with pytest.raises(KcppsError) as e:
        read_kcpps(k)
    assert words in str(e.value) and one_sentence(str(e.value)) and str(e.value).startswith("bad.kcpps")


def test_kcpps_with_javascript_nan_literal_is_refused(tmp_path):
    k = tmp_path / "nan.kcpps"
    k.write_text('{"tensor_split": [NaN, Infinity], "contextsize": 4096}')  # Python's json reads these
    with pytest.raises(KcppsError, match="finite"):
        read_kcpps(k)


def test_good_kcpps_values_are_kept(tmp_path):
    k = tmp_path / "ok.kcpps"
    k.write_text(json.dumps(dict(SEED, quantkv=1, batchsize=-1, port_param=6000, port=5001, host="0.0.0.0",
                                 tensor_split=[0, 0], usecuda=["normal", "2"])))
    imp = read_kcpps(k)
    s = imp.settings
    assert (s.cache_type_k, s.batch, s.port, s.host, s.tensor_split) == ("q8_0", 1, 6000, "0.0.0.0", None)
    assert imp.gpu_ids == [2] and any("batching off" in n for n in imp.notes)


# --- the planner's last line of defence ---

@pytest.fixture(scope="module")
def qwen():
    return preset_model_info("qwen2.5-32b-instruct-q4_k_m"), load_rig(demo_rig_path())


@pytest.mark.parametrize("kw", [
    {"devices": (0, 0)}, {"devices": (5,)}, {"tensor_split": (float("nan"), 1.0, 1.0)},
    {"tensor_split": (1.0, 1.0, 1.0, 1.0)}, {"tensor_split": (-1.0, 2.0, 2.0)}, {"gpulayers": -3},
    {"gpulayers": 2 ** 31}, {"batch": 0}, {"context": 10}, {"context": float("nan")}, {"port": 70000},
    {"host": "a b"}, {"cache_type_k": "banana"}, {"margin_mib": float("inf")}, {"cuda_overhead_mib": -5.0},
    {"moecpu": -1}, {"split_mode": "diagonal"},
])
def test_make_plan_refuses_nonsense_from_python(qwen, kw):
    model, rig = qwen
    with pytest.raises(v.InputError) as e:
        make_plan(model, rig, PlanSettings(**kw))
    assert one_sentence(str(e.value))


def test_make_plan_still_plans_sense(qwen):
    model, rig = qwen
    p = make_plan(model, rig, PlanSettings(devices=(2, 0), tensor_split=(1.0, 2.0), gpulayers=30))
    assert [d.layers for d in p.gpus] and sum(d.layers for d in p.gpus) == 30


# --- the CLI's plan arguments (in-process for speed; tests/test_no_overwrite.py runs the real CLI) ---

@pytest.mark.parametrize("args,words", [
    (["--devices", "0,0"], "listed twice"), (["--devices", "0,1,0"], "listed twice"),
    (["--split", "1", "2", "3", "4"], "4 split values for 3"), (["--devices", "0,1", "--split", "1", "2", "3"], "for 2"),
    (["--split", "nan", "1", "1"], "finite"), (["--split", "inf"], "finite"), (["--split", "-1", "2", "2"], "at least 0"),
    (["--split", "0", "0", "0"], "all be zero"), (["--ctx", "100"], "between 256"), (["--ctx", "300000"], "262144"),
    (["--batch", "0"], "batch size"), (["--batch", "100000"], "batch size"), (["--gpulayers", "-1"], "0 or more"),
    (["--gpulayers", str(2 ** 31)], "GPU layers"), (["--port", "0"], "port"), (["--port", "70000"], "port"),
    (["--host", "a b"], "not a host"), (["--host", "127.0.0.1\r\ncalc.exe"], "not a host"), (["--host", ""], "empty"),
    (["--margin", "nan"], "finite"), (["--overhead", "-5"], "between 0 and 65536"), (["--moecpu", "-2"], "moecpu"),
])
def test_cli_plan_arguments(capsys, args, words):
    assert cli_main(["plan", "--demo", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_cli_llama_server_allows_longer_contexts(capsys):
    assert cli_main(["plan", "--demo", "--backend", "llama-server", "--ctx", "300032", "--json"]) in (0, 3)


@pytest.mark.parametrize("args,words", [(["--timeout", "nan"], "finite"), (["--timeout", "inf"], "finite"),
                                        (["--timeout", "-1"], "timeout"), (["--retries", "-1"], "retries")])
def test_cli_launch_refuses_a_timeout_that_never_ends(capsys, tmp_path, args, words):
    assert cli_main(["launch", str(tmp_path / "m.gguf"), *args]) == 2
    assert words in capsys.readouterr().err


# --- the wizard's setters share the same error ---

def test_setting_error_is_the_shared_input_error():
    assert issubclass(SettingError, v.InputError) and issubclass(KcppsError, v.InputError)
    assert issubclass(RigFileError, v.InputError)
    st_ = WizardState(load_rig(demo_rig_path()))
    for call, words in ((lambda: st_.set_port(70000), "port"), (lambda: st_.set_host("a b"), "not a host"),
                        (lambda: st_.set_batch(float("nan")), "batch"), (lambda: st_.set_split_text("1 inf 1"), "finite"),
                        (lambda: st_.set_cache_type("banana"), "KV cache")):
        with pytest.raises(SettingError, match=words):
            call()


# --- regular files only: a FIFO must not hang any reader ---

def _finishes(fn, fifo: Path, seconds: float = 10.0):
    """Run fn on a thread; if it blocks on the FIFO, unblock it (open the write end) and fail."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail(f"{fn} blocked on the FIFO {fifo}")
    return box


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("name,reader,error", [
    ("x.gguf", read_model, ModelFileError), ("x.kcpps", read_kcpps, KcppsError), ("rig.toml", load_rig, RigFileError)])
def test_a_fifo_is_refused_not_read(tmp_path, name, reader, error):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    box = _finishes(lambda: reader(fifo), fifo)
    assert isinstance(box.get("error"), error) and "not a regular file" in str(box["error"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_fifo_settings_file_is_refused(tmp_path):
    fifo = tmp_path / "settings.json"
    os.mkfifo(fifo)
    box = _finishes(lambda: load_settings(fifo), fifo)
    s, msg = box["value"]
    assert "not a regular file" in msg and fifo.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_the_real_cli_does_not_hang_on_a_fifo(tmp_path):
    fifo = tmp_path / "x.gguf"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "phoenix_gui", "inspect", str(fifo)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "not a regular file" in r.stderr and "Traceback" not in r.stderr


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(SEED) + ["batchsize", "moecpu", "usemmap", "lowvram", "splitmode"]),
                       st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats() | st.text(max_size=8)
                       | st.lists(st.floats() | st.text(max_size=3), max_size=18)))
def test_any_kcpps_is_a_plan_or_one_sentence(tmp_path_factory, data):
    """Whatever the file holds: KcppsError, or settings the planner accepts."""
    k = tmp_path_factory.mktemp("k") / "h.kcpps"
    k.write_text(json.dumps(data))
    try:
        imp = read_kcpps(k)
    except KcppsError as e:
        assert one_sentence(str(e))
        return
    model, rig = preset_model_info("qwen2.5-7b-instruct-q4_k_m"), load_rig(demo_rig_path())
    st_ = WizardState(rig)
    st_.set_model(model, None)
    st_.apply_kcpps(imp)
    assert st_.plan() is not None


def test_unicode_digits_are_one_sentence_not_a_crash(tmp_path):
    """str.isdigit() accepts "¹" and "٣"; int() does not (or reads them): never let them through."""
    from phoenix_gui.hardware import RigFileError, load_rig

    rig = tmp_path / "r.toml"
    rig.write_text('name = "x"\n[system]\nram_gib = 16\nram_bandwidth_gbs = 20\n[[gpu]]\n'
                   'name = "NVIDIA GeForce GTX 1060 6GB"\nvram_mib = 6144\ncompute_capability = "¹.²"\n')
    with pytest.raises(RigFileError, match="compute_capability"):
        load_rig(rig)
    with pytest.raises(v.InputError):
        v.port("¹")
