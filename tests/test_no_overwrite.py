"""Never overwrite a user's file: the real `phoenix` command refuses to write a --script/--kcpps over an
existing file without --force, and over a model (a .gguf, or any file with the GGUF magic) ever."""

import hashlib
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_gui import validate as v

RIG = ["--rig", "phoenix-cluster"]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "phoenix_gui", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def digest(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def model(skeletons, tmp_path):
    """A real GGUF in the user's folder (a copy: the test checks it is never touched)."""
    src = skeletons("tiny-llama-f16")
    dst = tmp_path / "my model.gguf"
    dst.write_bytes(src.read_bytes())
    return dst


def test_script_over_the_model_is_refused_even_with_force(model):
    before = digest(model)
    for extra in ([], ["--force"]):
        r = run("plan", str(model), *RIG, "--script", str(model), *extra)
        assert r.returncode == 2 and "never writes over a model" in r.stderr and "Traceback" not in r.stderr
        assert digest(model) == before


def test_kcpps_over_a_renamed_model_is_refused(model, tmp_path):
    renamed = tmp_path / "backup.bin"
    renamed.write_bytes(model.read_bytes()[:4096])  # starts with the GGUF magic
    before = digest(renamed)
    r = run("plan", str(model), *RIG, "--kcpps", str(renamed), "--force")
    assert r.returncode == 2 and "model file" in r.stderr and digest(renamed) == before


def test_an_existing_config_needs_force(tmp_path):
    mine = tmp_path / "hand-tuned.kcpps"
    mine.write_text('{"gpulayers": 41}')
    script = tmp_path / "run.sh"
    r = run("plan", "--demo", "--kcpps", str(mine), "--script", str(script))
    assert r.returncode == 2 and "already exists" in r.stderr and "--force" in r.stderr
    assert mine.read_text() == '{"gpulayers": 41}' and not script.exists()  # nothing written at all
    r = run("plan", "--demo", "--kcpps", str(mine), "--script", str(script), "--force")
    assert r.returncode in (0, 3) and '"gpulayers": 41}' not in mine.read_text() and script.exists()


def test_same_file_for_both_outputs_is_refused(tmp_path):
    out = tmp_path / "both.txt"
    r = run("plan", "--demo", "--kcpps", str(out), "--script", str(out))
    assert r.returncode == 2 and "same file" in r.stderr and not out.exists()


def test_a_folder_or_missing_folder_is_refused(tmp_path):
    r = run("plan", "--demo", "--script", str(tmp_path))
    assert r.returncode == 2 and "not a regular file" in r.stderr
    r = run("plan", "--demo", "--script", str(tmp_path / "nope" / "run.sh"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_skeleton_needs_force_to_replace(tmp_path):
    out = tmp_path / "precious.gguf"
    out.write_bytes(b"GGUF" + b"\0" * 100)
    before = digest(out)
    r = run("skeleton", "tiny-llama-f16", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr and digest(out) == before


def test_screenshot_never_over_a_model(model):
    before = digest(model)
    r = run("--screenshot", "hardware", str(model), "--demo")
    assert r.returncode == 2 and "model" in r.stderr and digest(model) == before


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["a.gguf", "A.GGUF", "x.kcpps", "run.sh", "run.bat", "blob"]),
       exists=st.booleans(), magic=st.booleans(), force=st.booleans())
def test_check_writable_rule(tmp_path_factory, name, exists, magic, force):
    p = tmp_path_factory.mktemp("w") / name
    if exists:
        p.write_bytes((b"GGUF" if magic else b"text") + b"\0" * 20)
    model = name.lower().endswith(".gguf") or (exists and magic)
    allowed = not model and (not exists or force)
    try:
        assert v.check_writable(p, force) == p and allowed
    except v.InputError as e:
        assert not allowed and "\n" not in str(e)
    if exists:
        assert p.read_bytes()[:4] == (b"GGUF" if magic else b"text")  # checking never writes
