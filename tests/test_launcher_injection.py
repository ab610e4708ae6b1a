"""Generated launchers cannot be turned into a second command: a value with a control character is
refused before anything is written, every .bat value is quoted for cmd.exe, and the .sh launcher,
run by the real sh, hands the program exactly the arguments it was given."""

import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phoenix_gui.backends.commandline import bat_script, request_for, sh_script, write_kcpps, write_launcher
from phoenix_gui.engines.koboldcpp.options import koboldcpp_command
from phoenix_gui.engines.quoting import check_value, cmd_quote
from phoenix_gui.engines.request import LaunchCommand
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import PlanSettings, make_plan

# printable: everything but control characters, unpaired surrogates and line/paragraph separators
PRINTABLE = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40)
CONTROL = st.sampled_from(["\r", "\n", "\r\n", "\x00", "\x1a", "\x1b", "\t", "\x7f", "\x85", "\u2028", "\u2029"])
HOSTILE = ["/tmp/a b/m.gguf", "$HOME", "`id`", "$(id)", "a'b", 'a"b', "a;b", "a&b|c", "100%PATH%", "^x!y!",
           "C:\\Models\\", "-x", "", " ", "*", "~", "a\\'b", "<in >out", "(x)", "%%", "é ü 中文 🙂"]
INJECTIONS = ["127.0.0.1\r\ncalc.exe", "x\ncalc.exe", "x\rcalc.exe", "x\x00y", "x\x1acalc.exe", "x\u2028y"]


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    """A program that prints its arguments and one environment value, NUL-separated."""
    p = tmp_path_factory.mktemp("stub dir") / "print args"
    p.write_text("#!/bin/sh\nprintf '%s\\0' \"$PHX_VALUE\"\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done\n")
    p.chmod(0o755)
    return str(p)


def run_sh(script: str, tmp_path) -> list[str]:
    f = tmp_path / "launch me.sh"
    f.write_text(script, encoding="utf-8")
    out = subprocess.run(["sh", str(f)], capture_output=True, timeout=20, check=True).stdout
    return out.decode("utf-8").split("\0")[:-1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(PRINTABLE, max_size=6), value=PRINTABLE)
def test_sh_launcher_passes_any_printable_argv_exactly(stub, tmp_path, args, value):
    got = run_sh(sh_script(LaunchCommand([stub, *args], {"PHX_VALUE": value})), tmp_path)
    assert got == [value, *args]


def test_sh_launcher_hostile_values(stub, tmp_path):
    got = run_sh(sh_script(LaunchCommand([stub, *HOSTILE], {"PHX_VALUE": "GPU-a b,$(id)"})), tmp_path)
    assert got == ["GPU-a b,$(id)", *HOSTILE]


def parse_bat_command(line: str) -> list[str]:
    """How cmd.exe and then the program's C runtime read one of our lines: only double-quoted tokens
    separated by one space; %% is one %; backslashes before the closing quote come in pairs."""
    assert re.fullmatch(r'"[^"]*"( "[^"]*")*', line), line  # nothing outside quotes but single spaces
    out = []
    for tok in re.findall(r'"([^"]*)"', line):
        assert "%" not in tok.replace("%%", ""), tok  # no %VAR% expansion possible
        trail = len(tok) - len(tok.rstrip("\\"))
        assert trail % 2 == 0, tok  # an odd run would escape the closing quote
        out.append(tok[:len(tok) - trail // 2].replace("%%", "%"))
    return out


def check_bat(text: str, argv: list[str], env: dict[str, str]) -> None:
    lines = text.split("\r\n")
    assert lines[-1] == ""
    assert not any(re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", line) for line in lines)  # no control character
    assert lines[:4] == ["@echo off", lines[1], "chcp 65001 >nul", "setlocal DisableDelayedExpansion"]
    sets = lines[4:4 + len(env)]
    for (k, v), line in zip(env.items(), sets):
        m = re.fullmatch(r'set "([A-Za-z_][A-Za-z0-9_]*)=([^"]*)"', line)
        assert m and m.group(1) == k and "%" not in m.group(2).replace("%%", "")
        assert m.group(2).replace("%%", "%") == v
    assert lines[4 + len(env):] == [lines[4 + len(env)], "pause", ""]  # exactly one command line
    assert parse_bat_command(lines[4 + len(env)]) == argv


NO_QUOTE = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters='"'), max_size=40)


@settings(max_examples=300, deadline=None)
@given(args=st.lists(NO_QUOTE, min_size=1, max_size=6), value=NO_QUOTE)
def test_bat_launcher_is_one_quoted_command_for_any_printable_value(args, value):
    env = {"CUDA_VISIBLE_DEVICES": value}
    check_bat(bat_script(LaunchCommand(args, env)), args, env)


def test_bat_launcher_hostile_values():
    argv = ["C:\\Program Files\\k\\koboldcpp.exe"] + [h for h in HOSTILE if '"' not in h]
    env = {"CUDA_VISIBLE_DEVICES": "GPU-1 & calc.exe ^ | %PATH% !x!"}
    check_bat(bat_script(LaunchCommand(argv, env)), argv, env)
    assert cmd_quote("C:\\Models\\") == '"C:\\Models\\\\"'  # the quote still closes for the C runtime
    assert cmd_quote("") == '""' and cmd_quote("plain") == '"plain"'


@settings(max_examples=200, deadline=None)
@given(before=PRINTABLE, ctl=CONTROL, after=PRINTABLE, where=st.sampled_from(["argv", "env"]))
def test_any_control_character_is_refused_for_both_scripts(before, ctl, after, where):
    bad = before + ctl + after
    cmd = LaunchCommand(["koboldcpp", bad] if where == "argv" else ["koboldcpp"],
                        {"CUDA_VISIBLE_DEVICES": bad} if where == "env" else {})
    for make in (bat_script, sh_script):
        with pytest.raises(ValueError) as e:
            make(cmd)
        msg = str(e.value)
        assert "control character" in msg and not any(c in msg for c in "\r\n\x00")


@pytest.mark.parametrize("bad", INJECTIONS)
@pytest.mark.parametrize("suffix", [".bat", ".sh"])
def test_injection_is_refused_and_nothing_is_written(tmp_path, bad, suffix):
    out = tmp_path / f"run{suffix}"
    for cmd in (LaunchCommand(["koboldcpp", "--host", bad]), LaunchCommand(["koboldcpp"], {"CUDA_VISIBLE_DEVICES": bad})):
        with pytest.raises(ValueError):
            write_launcher(cmd, out)
        assert not out.exists()


@pytest.mark.parametrize("bad", ['GPU-1" & calc.exe & "', 'a"b'])
def test_double_quote_in_a_bat_value_is_refused(bad):
    with pytest.raises(ValueError, match="double quote"):
        bat_script(LaunchCommand(["koboldcpp"], {"CUDA_VISIBLE_DEVICES": bad}))
    with pytest.raises(ValueError, match="double quote"):
        bat_script(LaunchCommand(["koboldcpp", "--host", bad]))


def test_bad_environment_name_is_refused():
    for make in (bat_script, sh_script):
        with pytest.raises(ValueError):
            make(LaunchCommand(["k"], {"A=B&calc": "1"}))


def test_a_plan_with_a_hostile_host_and_rig_uuid_never_reaches_a_script(tmp_path):
    """The seen cases: a host with CR/LF (typed or from a .kcpps) and a rig UUID with CR/LF."""
    rig = load_rig(demo_rig_path())
    model = preset_model_info("qwen2.5-32b-instruct-q4_k_m")
    plan = make_plan(model, rig, PlanSettings(devices=(2, 1), tensor_split=(1, 2)))
    # set past any check a newer PlanSettings may make: the script writers must hold on their own
    object.__setattr__(plan.settings, "host", "127.0.0.1\r\ncalc.exe")
    with pytest.raises(ValueError):
        write_launcher(koboldcpp_command(request_for(plan, rig, "m.gguf")), tmp_path / "k.bat")
    with pytest.raises(ValueError):
        write_kcpps(plan, rig, "m.gguf", tmp_path / "k.kcpps")
    assert not (tmp_path / "k.bat").exists() and not (tmp_path / "k.kcpps").exists()
    rig.gpus[2].uuid = "GPU-1\r\ncalc.exe"
    plan = make_plan(model, rig, PlanSettings(devices=(2, 1), tensor_split=(1, 2)))
    cmd = koboldcpp_command(request_for(plan, rig, "m.gguf"))
    assert "\r" in cmd.env["CUDA_VISIBLE_DEVICES"]
    with pytest.raises(ValueError):
        write_launcher(cmd, tmp_path / "k.bat")
    with pytest.raises(ValueError):
        write_kcpps(plan, rig, "m\n.gguf", tmp_path / "k.kcpps")


def test_displayed_command_lines_never_show_a_second_command():
    cmd = LaunchCommand([sys.executable, "--host", "127.0.0.1\r\ncalc.exe", 'a"b'], {"CUDA_VISIBLE_DEVICES": 'x"&calc'})
    line = cmd.cmd_line()
    assert not any(c in line for c in "\r\n") and line.count('"') % 2 == 0
    assert "\ufffd" in line


def test_check_value_accepts_printable_text():
    assert check_value("C:\\Program Files\\ü 100% & (x)") == "C:\\Program Files\\ü 100% & (x)"


def test_launchers_and_kcpps_never_write_over_a_file_without_force(tmp_path):
    cmd = LaunchCommand(["koboldcpp", "--port", "5001"])
    for name in ("run.sh", "run.bat"):
        out = tmp_path / name
        out.write_text("hand-tuned")
        with pytest.raises(ValueError, match="already exists"):
            write_launcher(cmd, out)
        assert out.read_text() == "hand-tuned"
        write_launcher(cmd, out, force=True)
        assert "koboldcpp" in out.read_text()
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ValueError, match="model"):
        write_launcher(cmd, model, force=True)
    assert model.read_bytes()[:4] == b"GGUF"
    rig = load_rig(demo_rig_path())
    plan = make_plan(preset_model_info("qwen2.5-32b-instruct-q4_k_m"), rig, PlanSettings())
    k = tmp_path / "old.kcpps"
    k.write_text("{}")
    with pytest.raises(ValueError, match="already exists"):
        write_kcpps(plan, rig, "m.gguf", k)
    assert k.read_text() == "{}"
    write_kcpps(plan, rig, "m.gguf", k, force=True)
    assert '"port": 5001' in k.read_text()
