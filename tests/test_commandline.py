import json
import subprocess
import sys

import pytest

from phoenix_gui.backends import bat_script, request_for, write_launcher
from phoenix_gui.engines.koboldcpp.options import kcpps_config, koboldcpp_command
from phoenix_gui.engines.llama_server.options import llama_server_command
from phoenix_gui.engines.quoting import cmd_quote
from phoenix_gui.engines.request import LaunchCommand
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import PlanSettings, make_plan

WEIRD = "/home/ü ser/My Models & Stuff/100% (final)^!/qwen 32b.gguf"


@pytest.fixture(scope="module")
def setup():
    rig = load_rig(demo_rig_path())
    m = preset_model_info("qwen2.5-32b-instruct-q4_k_m")
    return rig, m


def test_koboldcpp_argv_for_the_seed(setup):
    rig, m = setup
    p = make_plan(m, rig, PlanSettings(context=4096, gpulayers=40, tensor_split=(1.5, 4.5, 3), cache_type_k="q8_0",
                                       cache_type_v="q8_0", port=5002))
    c = koboldcpp_command(request_for(p, rig, WEIRD))
    a = c.argv
    assert a[:4] == ["koboldcpp", "--skiplauncher", "--model", WEIRD]
    assert "--usecuda" in a and a[a.index("--usecuda") + 1].startswith("--")  # bare: no id masking
    assert a[a.index("--gpulayers") + 1] == "40"
    i = a.index("--tensor_split")
    assert a[i + 1:i + 4] == ["1.5", "4.5", "3"]
    assert a[a.index("--contextsize") + 1] == "4096" and a[a.index("--quantkv") + 1] == "q8_0"
    assert a[a.index("--port") + 1] == "5002" and a[a.index("--host") + 1] == "127.0.0.1"
    assert c.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "CUDA_VISIBLE_DEVICES" not in c.env  # all GPUs in bus order


def test_subset_and_reorder_mask_by_uuid(setup):
    rig, m = setup
    p = make_plan(m, rig, PlanSettings(devices=(2, 1), tensor_split=(1, 2)))
    c = koboldcpp_command(request_for(p, rig, "m.gguf"))
    assert c.env["CUDA_VISIBLE_DEVICES"] == f"{rig.gpus[2].uuid},{rig.gpus[1].uuid}"
    ls = llama_server_command(request_for(p, rig, "m.gguf"))
    assert ls.argv[ls.argv.index("--device") + 1] == "CUDA2,CUDA1"


def test_cpu_only_uses_usecpu():
    from phoenix_gui.hardware.rig import GIB, Rig, SystemInfo

    rig = Rig("cpu", [], SystemInfo(16 * GIB, 12 * GIB, 4, 8, 30, "table"))
    p = make_plan(preset_model_info("tiny-llama-f16"), rig, PlanSettings())
    a = koboldcpp_command(request_for(p, rig, "t.gguf")).argv
    assert "--usecpu" in a and "--usecuda" not in a
    assert "-ngl" in llama_server_command(request_for(p, rig, "t.gguf")).argv


def test_llama_server_argv(setup):
    rig, m = setup
    p = make_plan(m, rig, PlanSettings(context=8192, gpulayers=50, tensor_split=(9, 26, 15), flash_attn=False,
                                       cache_type_k="q8_0", cache_type_v="q8_0", moecpu=0, backend="llama-server"))
    a = llama_server_command(request_for(p, rig, WEIRD)).argv
    assert a[a.index("-ts") + 1] == "9,26,15" and a[a.index("-ngl") + 1] == "50"
    assert a[a.index("-fa") + 1] == "off" and a[a.index("-ctv") + 1] == "f16"  # quantized V needs FA
    assert a[a.index("--fit") + 1] == "off" and a[a.index("-c") + 1] == "8192"


def test_kcpps_port_and_port_param_agree(setup, tmp_path):
    rig, m = setup
    p = make_plan(m, rig, PlanSettings(gpulayers=40, tensor_split=(1.5, 4.5, 3), port=5123))
    k = kcpps_config(request_for(p, rig, WEIRD))
    assert k["port"] == k["port_param"] == 5123
    assert k["tensor_split"] == [1.5, 4.5, 3.0] and k["gpulayers"] == 40 and k["model"] == [WEIRD]
    assert k["usecuda"] == ["normal"] and k["usecpu"] is False and k["skiplauncher"] is True
    json.dumps(k)


def test_cmd_quoting():
    assert cmd_quote("plain") == '"plain"'  # every value in quotes
    assert cmd_quote("a b") == '"a b"'
    assert cmd_quote("R&D") == '"R&D"'
    assert cmd_quote("100%") == '"100%%"'
    assert cmd_quote("^(x)|<y>") == '"^(x)|<y>"'
    with pytest.raises(ValueError):
        cmd_quote('say "hi"')
    bat = bat_script(LaunchCommand(["C:\\Program Files\\k\\koboldcpp.exe", "--model", WEIRD], {"CUDA_VISIBLE_DEVICES": "GPU-1"}))
    assert '"C:\\Program Files\\k\\koboldcpp.exe"' in bat and "100%%" in bat and "\r\n" in bat
    assert 'set "CUDA_VISIBLE_DEVICES=GPU-1"' in bat


def test_sh_launcher_passes_every_argument_intact(tmp_path):
    """Run the generated script with an executable that reports what it received."""
    echo = tmp_path / "echo args.py"
    echo.write_text("import json, os, sys\nprint(json.dumps({'argv': sys.argv[1:], 'env': os.environ.get('CUDA_VISIBLE_DEVICES')}))\n")
    argv = [sys.executable, str(echo), "--model", WEIRD, "--tensor_split", "1.5", "4.5", "$HOME", "`id`", "a'b"]
    script = write_launcher(LaunchCommand(argv, {"CUDA_VISIBLE_DEVICES": "GPU-a b,GPU-c"}), tmp_path / "run me.sh")
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True).stdout
    got = json.loads(out)
    assert got["argv"] == argv[2:] and got["env"] == "GPU-a b,GPU-c"


def test_koboldcpp_py_runs_with_this_python(setup):
    rig, m = setup
    p = make_plan(m, rig, PlanSettings())
    a = koboldcpp_command(request_for(p, rig, "m.gguf", exe="/opt/kobold cpp/koboldcpp.py")).argv
    assert a[:2] == [sys.executable, "/opt/kobold cpp/koboldcpp.py"]


def test_kcpps_names_the_chosen_gpus_it_cannot_mask(setup, tmp_path):
    """A .kcpps cannot carry CUDA_VISIBLE_DEVICES: two of three GPUs, in another order, must be named in
    its `device` list (CUDA ids in PCI order), or koboldcpp splits over every GPU in PCI order."""
    from phoenix_gui.backends.kcpps import KcppsError, read_kcpps
    from phoenix_gui.session import WizardState

    rig, m = setup
    p = make_plan(m, rig, PlanSettings(context=4096, devices=(2, 0), gpulayers=30, tensor_split=(20, 10)))
    cfg = kcpps_config(request_for(p, rig, "m.gguf"))
    assert cfg["device"] == f"CUDA{rig.gpus[2].index},CUDA{rig.gpus[0].index}"
    assert cfg["tensor_split"] == [20.0, 10.0]
    every = make_plan(m, rig, PlanSettings(context=4096))
    assert kcpps_config(request_for(every, rig, "m.gguf"))["device"] == ""  # all GPUs in PCI order: koboldcpp's own
    (tmp_path / "two.kcpps").write_text(json.dumps(cfg))
    imp = read_kcpps(tmp_path / "two.kcpps")
    assert imp.gpu_ids == [rig.gpus[2].index, rig.gpus[0].index]
    st = WizardState(rig)
    st.set_model(m, None)
    st.apply_kcpps(imp)
    assert st.settings().devices == (2, 0) and st.settings().tensor_split == (20.0, 10.0)
    for bad in ("Vulkan0", "CUDA0,CUDA0", "CUDA0,RPC0", 7):
        (tmp_path / "bad.kcpps").write_text(json.dumps({**cfg, "device": bad}))
        with pytest.raises(KcppsError):
            read_kcpps(tmp_path / "bad.kcpps")


def test_llama_server_reads_the_weights_when_mapping_is_off(setup):
    """use_mmap=False must reach the engine: current llama-server builds take --load-mode none (no
    --no-mmap any more), builds before Dec 2025 --no-mmap; with mapping on nothing is added."""
    rig, m = setup
    on = llama_server_command(request_for(make_plan(m, rig, PlanSettings(backend="llama-server")), rig,
                                          "m.gguf")).argv
    off = llama_server_command(request_for(make_plan(m, rig, PlanSettings(backend="llama-server", use_mmap=False)),
                                           rig, "m.gguf")).argv
    old = llama_server_command(request_for(make_plan(m, rig, PlanSettings(backend="llama-server", use_mmap=False,
                                                                          engine="llama.cpp-old")), rig, "m.gguf")).argv
    assert "--load-mode" not in on and "--no-mmap" not in on
    assert off[off.index("--load-mode") + 1] == "none"
    assert "--no-mmap" in old and "--load-mode" not in old
