import json
import subprocess
import sys

import pytest


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "phoenix_gui", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_plan_demo_json():
    r = run("plan", "--demo", "--gpulayers", "40", "--split", "1.5", "4.5", "3", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["fits"] is True and d["gpulayers"] == 40 and d["tensor_split"] == [1.5, 4.5, 3.0]
    assert d["context"] == 4096 and d["predicted_tokens_per_s"] > 0 and isinstance(d["argv"], list)
    kinds = [x["kind"] for x in d["devices"]]
    assert kinds == ["gpu", "gpu", "gpu", "cpu"]
    for dev in d["devices"]:
        for k in ("name", "layers", "weights_bytes", "kv_bytes", "compute_bytes", "overhead_bytes", "total_bytes",
                  "usable_bytes", "fits"):
            assert k in dev


def test_plan_demo_table_and_auto():
    r = run("plan", "--demo", "--auto", "fastest")
    assert r.returncode == 0, r.stderr
    for words in ("GTX 1050 Ti", "RTX 2080", "GTX 1060", "CPU / RAM", "headroom", "Predicted generation", "koboldcpp"):
        assert words in r.stdout


def test_plan_not_fitting_exits_3_with_reason():
    r = run("plan", "--demo", "--split", "4", "8", "6")
    assert r.returncode == 3
    assert "GTX 1050 Ti:" in r.stdout and "MiB short" in r.stdout


def test_broken_model_one_sentence_no_traceback(tmp_path):
    bad = tmp_path / "not a model.gguf"
    bad.write_bytes(b"hello world, definitely not gguf" * 10)
    for cmd in (("inspect", str(bad)), ("plan", str(bad), "--rig", "phoenix_gui/data/rigs/phoenix-cluster.toml")):
        r = run(*cmd)
        assert r.returncode == 2
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
        assert "not a GGUF" in r.stderr


def test_skeleton_and_inspect(tmp_path):
    out = tmp_path / "dir with space" / "q.gguf"
    r = run("skeleton", "qwen2.5-32b-instruct-q4_k_m", str(out), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert abs(d["vs_published_percent"]) < 1.5
    r = run("inspect", str(out), "--json")
    s = json.loads(r.stdout)
    assert s["n_layer"] == 64 and s["file_type"] == "Q4_K_M" and len(s["layer_bytes"]) == 64


def test_detect_json_on_this_machine_and_demo():
    r = run("detect", "--json", "--no-bandwidth")
    assert r.returncode == 0 and json.loads(r.stdout)["gpus"] == []
    r = run("detect", "--demo")
    assert "GTX 1050 Ti" in r.stdout and "[display]" in r.stdout


@pytest.mark.parametrize("args,words", [
    (("plan", "--demo", "--devices", "7"), "no GPU 7"),
    (("plan", "--demo", "--ctx", "10"), "between 256 and 262144"),
    (("plan", "--demo", "--rig", "/nope/rig.toml"), "does not exist"),
    (("plan",), "Give a model file"),
])
def test_user_errors(args, words):
    r = run(*args)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr


def test_writes_kcpps_and_script(tmp_path):
    k, s = tmp_path / "a b.kcpps", tmp_path / "run.bat"
    r = run("plan", "--demo", "--auto", "fastest", "--kcpps", str(k), "--script", str(s))
    assert r.returncode == 0
    assert json.loads(k.read_text())["gpulayers"] > 40
    assert s.read_bytes().count(b"\r\n") >= 4


def test_self_test_passes_and_open_with_routes_files():
    r = run("--self-test")
    assert r.returncode == 0 and r.stdout.startswith("phoenix self-test OK"), r.stderr
    from phoenix_gui.cli import _open_with

    assert _open_with(["C:\\Models\\my model.gguf"]) == ["--model", "C:\\Models\\my model.gguf"]
    assert _open_with(["seed.kcpps"]) == ["--kcpps", "seed.kcpps"]
    assert _open_with(["plan", "--demo"]) == ["plan", "--demo"]


def test_wizard_without_a_display_says_so(monkeypatch):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    r = subprocess.run([sys.executable, "-m", "phoenix_gui", "--demo"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "No display" in r.stderr and "Traceback" not in r.stderr
