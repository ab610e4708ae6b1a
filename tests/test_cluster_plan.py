"""A cluster on paper: rig files with [[node]]s, RPC devices in the plan (memory, speed, network, load
time), the engines' command lines and .kcpps for them, failures named by PC, and `phoenix plan`'s picture.
The same against the real engines is tests/test_cluster.py."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from phoenix_gui.backends.commandline import request_for, write_kcpps
from phoenix_gui.backends.diagnose import classify
from phoenix_gui.backends.kcpps import KcppsError, read_kcpps
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.engines.devices import engine_split
from phoenix_gui.engines.koboldcpp.options import kcpps_config, koboldcpp_command
from phoenix_gui.engines.llama_server.options import llama_server_command
from phoenix_gui.hardware.cluster import ASSUMED_LINK, cluster_rig, machine_of, nodes_of
from phoenix_gui.hardware.rig import LinkInfo, RemoteNode
from phoenix_gui.hardware.rig import MIB
from phoenix_gui.hardware.rigfile import RigFileError, load_rig
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.planner.autofit import auto_fit
from phoenix_gui.planner.network import RPC_REQUEST_BYTES, network_seconds
from phoenix_gui.planner.plan import REMOTE_CPU_HOST_MIB
from phoenix_gui.validate import InputError, rpc_targets
from cluster_rigs import MAIN_AND_TWO_NODES as RIG


def rig_file(tmp_path, text=RIG, name="cluster.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def cluster(tmp_path):
    return load_rig(rig_file(tmp_path))


# --- rig files ---

def test_rig_file_nodes_come_first_in_engine_order(cluster):
    assert [g.name for g in cluster.gpus] == ["NVIDIA GeForce RTX 3060", "Laptop RAM", "NVIDIA GeForce RTX 2080"]
    assert [g.node for g in cluster.gpus] == ["192.168.1.20:50052", "192.168.1.21:50052", ""]
    assert [machine_of(cluster, g) for g in cluster.gpus] == ["gaming-pc", "laptop", "this PC"]
    gaming, laptop = nodes_of(cluster)
    assert gaming.link == LinkInfo(0.5, 112.0, measured=False) and laptop.link.rtt_ms == 2.0
    assert cluster.gpus[0].architecture == "Ampere" and cluster.gpus[0].free_bytes == 11800 * MIB
    assert cluster.gpus[1].architecture == "cpu" and cluster.gpus[1].bandwidth_gbs == 50
    assert cluster.name == "Main PC + gaming-pc, laptop"
    # adding a node to a cluster keeps the PC's own name and the rig file's nodes first
    more = cluster_rig(cluster, nodes_of(cluster) + [RemoteNode("10.0.0.9:1", "attic", [cluster.gpus[2]])])
    assert more.name == "Main PC + gaming-pc, laptop, attic"
    assert [g.node for g in more.gpus] == ["192.168.1.20:50052", "192.168.1.21:50052", "10.0.0.9:1", ""]


@pytest.mark.parametrize("change, words", [
    (('address = "192.168.1.20:50052"', 'address = "192.168.1.20"'), "needs a port"),
    (('address = "192.168.1.20:50052"', 'address = "[::1]:50052"'), "IPv6"),
    (('address = "192.168.1.20:50052"', 'address = "192.168.1.21:50052"'), "listed twice"),
    (('address = "192.168.1.20:50052"', 'address = "a:1,b:2"'), "its own [[node]]"),
    (('address = "192.168.1.20:50052"', 'address = 5'), "must be text"),
    (('address = "192.168.1.20:50052"\n', ''), "needs an address"),
    (('free_mib = 11800', 'free_mib = 20000'), "more free memory"),
    (('free_mib = 11800', 'free_mib = nan'), "free_mib"),
    (('rtt_ms = 0.5\n', ''), "both rtt_ms and throughput_mbs"),
    (('throughput_mbs = 112', 'throughput_mbs = 0'), "throughput_mbs"),
    (('bandwidth_gbs = 50\n', ''), "is a CPU; give its RAM bandwidth"),
    (('cpu = true', 'cpu = "yes"'), "true or false"),
    (('name = "NVIDIA GeForce RTX 3060"\n', 'name = "Mystery card"\n'), "spec table"),
])
def test_rig_file_node_faults_are_one_sentence(tmp_path, change, words):
    old, new = change
    assert old in RIG
    with pytest.raises(RigFileError) as e:
        load_rig(rig_file(tmp_path, RIG.replace(old, new, 1)))
    msg = str(e.value)
    assert words in msg and msg.startswith("The rig file cluster.toml") and "\n" not in msg, msg


def test_rig_file_node_without_devices_and_too_many_devices(tmp_path):
    no_dev = RIG.split("[[node.device]]")[0]
    with pytest.raises(RigFileError, match="lists no device"):
        load_rig(rig_file(tmp_path, no_dev))
    many = RIG + "".join(f'[[node.device]]\nname = "Laptop RAM {i}"\ncpu = true\ntotal_mib = 1024\nfree_mib = 512\n'
                         f'bandwidth_gbs = 20\n' for i in range(14))
    with pytest.raises(RigFileError, match="more than the 16"):
        load_rig(rig_file(tmp_path, many))


@pytest.mark.parametrize("text, out", [
    ("127.0.0.1:50052", ["127.0.0.1:50052"]),
    (" 192.168.1.20:50052 , Gaming-PC.local:7 ", ["192.168.1.20:50052", "gaming-pc.local:7"]),
])
def test_rpc_targets_accepts_host_port_lists(text, out):
    assert rpc_targets(text) == out


@pytest.mark.parametrize("text, words", [
    ("", "No RPC address"), ("1.2.3.4", "needs a port"), ("1.2.3.4:0", "no valid port"),
    ("1.2.3.4:65536", "no valid port"), ("1.2.3.4:x", "no valid port"), ("a:٣", "no valid port"),
    ("[::1]:5", "IPv6"), ("fe80::1:5", "IPv6"), ("a:1,a:1", "listed twice"), ("a:1,,b:2", "empty entry"),
    ("a:1\nrm -rf /:2", "control character"), ("pc;reboot:5", "not a host name"), ("1.2.3.256:5", "not an IP"),
    (",".join(f"h{i}:1" for i in range(17)), "at most 16"), (None, "must be text"),
])
def test_rpc_targets_refuses_in_one_sentence(text, words):
    with pytest.raises(InputError) as e:
        rpc_targets(text)
    assert words in str(e.value) and "\n" not in str(e.value), str(e.value)


# --- the plan: memory ---

def test_rpc_devices_carry_the_nodes_overhead_not_this_pcs(cluster, q32):
    plan = make_plan(q32, cluster, PlanSettings(context=4096, tensor_split=(30, 10, 25)))
    gaming, laptop, local = plan.gpus
    assert gaming.name == "RTX 3060 (gaming-pc)" and laptop.name == "Laptop RAM (laptop)" and local.name == "RTX 2080"
    assert gaming.overhead_bytes == 300 * MIB  # the node's engine keeps its CUDA context on that GPU
    assert laptop.overhead_bytes == REMOTE_CPU_HOST_MIB * MIB  # the RPC host process, no CUDA at all
    assert laptop.reserve_bytes == 1024 * MIB  # RAM keeps the RAM margin, not a GPU's
    assert not plan.pipeline_parallel  # the RPC backend has no events: llama.cpp runs no pipeline copies
    assert [d.layers for d in plan.gpus] == [30, 10, 25]
    # a windows main PC does not change what the node's GPU needs: same as a Linux main
    win = make_plan(q32, replace(cluster, os="windows"), PlanSettings(context=4096, tensor_split=(30, 10, 25)))
    assert win.gpus[2].overhead_bytes == 450 * MIB and win.gpus[1].overhead_bytes == REMOTE_CPU_HOST_MIB * MIB


def test_pipeline_copies_return_without_rpc_devices(cluster, q32):
    local_only = replace(cluster, gpus=[g for g in cluster.gpus if not g.is_remote] * 1)
    two = replace(local_only, gpus=[local_only.gpus[0], replace(local_only.gpus[0], uuid="GPU-b", pci_bus_id="b")])
    assert make_plan(q32, two, PlanSettings(context=2048)).pipeline_parallel  # every layer offloaded


def test_a_plan_must_list_rpc_devices_first(cluster, q32):
    with pytest.raises(InputError, match="must come first"):
        make_plan(q32, cluster, PlanSettings(devices=(2, 0)))
    with pytest.raises(InputError, match="must come first"):
        make_plan(q32, cluster, PlanSettings(devices=(1, 0)))  # the nodes in the order they were added
    assert len(make_plan(q32, cluster, PlanSettings(devices=(0, 2))).gpus) == 2  # a node left out is fine


# --- the plan: speed over the network ---

def _split_plan(rig, model, split, **kw):
    return make_plan(model, rig, PlanSettings(context=4096, tensor_split=split, **kw))


def test_network_term_follows_rtt_and_throughput(cluster, q32):
    base = _split_plan(cluster, q32, (30, 0, 35))  # one run of layers on gaming-pc, then this PC
    net = base.speed_inputs.network_s
    # one round trip plus n_embd floats there and back
    assert net == pytest.approx(0.5e-3 + (2 * q32.n_embd * 4 + RPC_REQUEST_BYTES) / 112e6, rel=1e-9)
    slow = nodes_of(cluster)
    slower = cluster_rig(cluster, [replace(slow[0], link=LinkInfo(5.0, 11.2)), slow[1]])
    p2 = _split_plan(slower, q32, (30, 0, 35))
    assert p2.speed_inputs.network_s == pytest.approx(5e-3 + (2 * q32.n_embd * 4 + RPC_REQUEST_BYTES) / 11.2e6, rel=1e-9)
    assert p2.predicted_tokens_per_s < base.predicted_tokens_per_s
    # the token time grows by exactly the network's difference
    assert 1 / p2.predicted_tokens_per_s - 1 / base.predicted_tokens_per_s == pytest.approx(
        p2.speed_inputs.network_s - net, rel=1e-6)


def test_the_output_layer_on_a_node_sends_the_logits_back(cluster, q32):
    p = _split_plan(cluster, q32, (65,), devices=(0,))
    assert p.gpus[0].has_output
    assert p.speed_inputs.network_s == pytest.approx(0.5e-3 + ((q32.n_embd + q32.n_vocab) * 4 + RPC_REQUEST_BYTES) / 112e6,
                                                   rel=1e-9)


def test_hops_inside_one_node_cost_no_network(tmp_path, q32):
    two_gpus = RIG.replace('[[node]]\naddress = "192.168.1.21:50052"', '[[node.device]]\nname = "NVIDIA GeForce RTX 3060"\n'
                           'total_mib = 12288\nfree_mib = 11800\n[[node]]\naddress = "192.168.1.21:50052"', 1)
    rig = load_rig(rig_file(tmp_path, two_gpus))
    assert [g.node for g in rig.gpus][:2] == ["192.168.1.20:50052"] * 2
    same_node = _split_plan(rig, q32, (20, 20, 0, 25))  # gaming-pc's two GPUs back to back: one run
    one_gpu = _split_plan(rig, q32, (40, 0, 0, 25))
    assert same_node.speed_inputs.network_s == pytest.approx(one_gpu.speed_inputs.network_s)
    across = _split_plan(rig, q32, (20, 0, 20, 25))  # gaming-pc, laptop, this PC: two runs
    assert across.speed_inputs.network_s > 1.9 * one_gpu.speed_inputs.network_s
    assert network_seconds(rig, [g for g in rig.gpus], [3] * 65, q32.n_embd, q32.n_vocab) == 0.0


def test_autofit_keeps_a_model_that_fits_here_off_the_network(tmp_path, skeletons):
    from phoenix_gui.model import read_model

    q7 = read_model(skeletons("qwen2.5-7b-instruct-q4_k_m"))
    rig = load_rig(rig_file(tmp_path, RIG.replace('vram_mib = 8192', 'vram_mib = 24576').replace(
        'name = "NVIDIA GeForce RTX 2080"', 'name = "NVIDIA GeForce RTX 3090"')))
    p = auto_fit(q7, rig, PlanSettings(context=4096)).plan
    assert [rig.gpus[d.gpu_index].node for d in p.gpus if d.layers] == [""]
    assert p.speed_inputs.network_s == 0


def test_autofit_prefers_one_node_to_two(tmp_path, q32):
    """The model needs a second GPU: one other PC holds the rest, so both others would only add a hop."""
    text = RIG.replace('name = "Laptop RAM"\ncpu = true\ntotal_mib = 32768\nfree_mib = 20000\nbandwidth_gbs = 50',
                       'name = "NVIDIA GeForce RTX 3060"\ntotal_mib = 12288\nfree_mib = 11800')
    rig = load_rig(rig_file(tmp_path, text.replace('vram_mib = 8192', 'vram_mib = 12288').replace(
        'name = "NVIDIA GeForce RTX 2080"', 'name = "NVIDIA GeForce RTX 3060"')))
    p = auto_fit(q32, rig, PlanSettings(context=4096)).plan
    used = {rig.gpus[d.gpu_index].node for d in p.gpus if d.layers}
    assert p.fits and p.cpu.layers == 0
    assert len(used - {""}) == 1, used


AF_RIG = """
name = "Main PC"
[system]
ram_gib = 32
ram_bandwidth_gbs = 40
[[gpu]]
name = "NVIDIA GeForce RTX 2080"
vram_mib = 8192
[[node]]
address = "192.168.1.20:50052"
name = "gaming-pc"
rtt_ms = 3
throughput_mbs = 112
[[node.device]]
name = "NVIDIA GeForce RTX 3070"
total_mib = 8192
free_mib = 8000
"""


def test_autofit_tries_this_pc_alone_when_the_network_costs_more(tmp_path, skeletons):
    from phoenix_gui.model import read_model

    q7 = read_model(skeletons("qwen2.5-7b-instruct-q4_k_m"))
    rig = load_rig(rig_file(tmp_path, AF_RIG))
    here = make_plan(q7, rig, PlanSettings(context=2048, devices=(1,)))
    assert here.fits and here.speed_inputs.network_s == 0
    fit = auto_fit(q7, rig, PlanSettings(context=2048)).plan
    # the 3070 over a 3 ms link (and the logits back over 112 MB/s) is slower than the 2080 here
    assert fit.predicted_tokens_per_s >= here.predicted_tokens_per_s, (fit.predicted_tokens_per_s,
                                                                       here.predicted_tokens_per_s)


def test_load_time_is_said_per_node(cluster, q32):
    p = _split_plan(cluster, q32, (40, 0, 25))
    sent = p.gpus[0].weights_bytes
    note = next(w for w in p.warnings if "gaming-pc" in w)
    assert f"{sent / 1e9:.1f} GB" in note and "112 MB/s" in note and "given link" in note
    secs = sent / 112e6
    assert f"about {round(secs)} s" in note or f"about {secs / 60:.1f} min" in note
    assert not any("laptop" in w for w in p.warnings)  # no layer there: nothing to send


def test_a_10_gb_shard_over_gigabit_is_about_90_seconds(cluster, q32):
    unknown = cluster_rig(cluster, [replace(nodes_of(cluster)[0], link=None)])
    split = next((n, 65 - n) for n in range(20, 66) if _split_plan(unknown, q32, (n, 65 - n)).gpus[0].weights_bytes > 10e9)
    p = _split_plan(unknown, q32, split)
    gb = p.gpus[0].weights_bytes / 1e9
    assert 10 <= gb < 10.5
    note = next(w for w in p.warnings if "gaming-pc" in w)
    assert "assuming 1 Gbit Ethernet" in note and ("about 89 s" in note or "about 1.5 min" in note), note
    assert p.speed_inputs.network_s == pytest.approx(ASSUMED_LINK.rtt_ms / 1000 + (2 * q32.n_embd * 4 + RPC_REQUEST_BYTES) / 112e6)


def test_unknown_device_speed_is_assumed_and_said(cluster, q32):
    bare = replace(cluster.gpus[0], name="RPC0[192.168.1.20:50052]", architecture="unknown", bandwidth_gbs=0.0)
    rig = cluster_rig(cluster, [replace(nodes_of(cluster)[0], devices=[bare])])
    p = _split_plan(rig, q32, (30, 35))
    assert p.predicted_tokens_per_s > 0
    assert any("memory speed of gaming-pc's devices is unknown" in w for w in p.warnings)
    fit = auto_fit(q32, rig, PlanSettings(context=4096)).plan  # ranking cards by speed divided by zero
    assert fit.fits and fit.predicted_tokens_per_s > 0


# --- command lines and .kcpps ---

def test_koboldcpp_command_for_a_cluster(cluster, q32):
    p = _split_plan(cluster, q32, (30, 10, 25), overrides=(("output", "CUDA0"), ("blk\\.3\\.", "CUDA2")))
    cmd = koboldcpp_command(request_for(p, cluster, "m.gguf"))
    a = cmd.argv
    assert a[a.index("--rpcmode") + 1] == "connect"
    assert a[a.index("--rpctargets") + 1] == "192.168.1.20:50052,192.168.1.21:50052"
    assert "--usecuda" in a and "CUDA_VISIBLE_DEVICES" not in cmd.env
    i = a.index("--tensor_split")
    assert a[i + 1:i + 4] == ["30", "10", "25"]
    assert a[a.index("--overridetensors") + 1] == "output=RPC0[192.168.1.20:50052],blk\\.3\\.=CUDA0"


def test_a_node_device_the_plan_leaves_out_gets_a_zero_share(tmp_path, q32):
    two_gpus = RIG.replace('[[node]]\naddress = "192.168.1.21:50052"', '[[node.device]]\nname = "NVIDIA GeForce RTX 3070"\n'
                           'total_mib = 8192\nfree_mib = 8000\n[[node]]\naddress = "192.168.1.21:50052"', 1)
    rig = load_rig(rig_file(tmp_path, two_gpus))
    p = make_plan(q32, rig, PlanSettings(devices=(1, 3), tensor_split=(30, 35)))  # gaming-pc's 3070 + the 2080
    assert engine_split(request_for(p, rig)) == [0.0, 30.0, 35.0]  # the engine still sees gaming-pc's 3060 first
    a = koboldcpp_command(request_for(p, rig, "m.gguf")).argv
    assert a[a.index("--rpctargets") + 1] == "192.168.1.20:50052"  # laptop not used, not connected
    l = llama_server_command(request_for(p, rig, "m.gguf")).argv
    assert l[l.index("--rpc") + 1] == "192.168.1.20:50052" and l[l.index("--device") + 1] == "RPC1,CUDA0"


def test_only_other_pcs_devices_runs_koboldcpp_with_usecpu(cluster, q32):
    p = make_plan(q32, cluster, PlanSettings(devices=(0, 1), tensor_split=(50, 15)))
    a = koboldcpp_command(request_for(p, cluster, "m.gguf")).argv
    assert "--usecpu" in a and "--usecuda" not in a and a[a.index("--gpulayers") + 1] == "65"
    # koboldcpp's CPU library ignores --tensor_split: the plan splits by the nodes' free memory, and says so
    assert any("ignores --tensor_split" in w for w in p.warnings)
    free = [cluster.gpus[0].free_bytes, cluster.gpus[1].free_bytes]
    assert p.gpus[0].layers == pytest.approx(65 * free[0] / sum(free), abs=1)
    assert not any("ignores" in w for w in make_plan(q32, cluster, PlanSettings(devices=(0, 1), tensor_split=(50, 15),
                                                                                 backend="llama-server")).warnings)
    cfg = kcpps_config(request_for(p, cluster, "m.gguf"))
    assert cfg["usecpu"] is True and cfg["usecuda"] is None and cfg["gpulayers"] == 65


def test_llama_server_command_for_a_cluster(cluster, q32):
    p = _split_plan(cluster, q32, (30, 10, 25))
    a = llama_server_command(request_for(p, cluster, "m.gguf")).argv
    assert a[a.index("--rpc") + 1] == "192.168.1.20:50052,192.168.1.21:50052"
    assert a[a.index("--device") + 1] == "RPC0,RPC1,CUDA0" and a[a.index("-ts") + 1] == "30,10,25"


def test_kcpps_round_trip_keeps_the_rpc_targets(cluster, q32, tmp_path):
    p = _split_plan(cluster, q32, (30, 10, 25))
    out = write_kcpps(p, cluster, "m.gguf", tmp_path / "c.kcpps")
    cfg = json.loads(out.read_text())
    assert cfg["rpcmode"] == "connect" and cfg["rpctargets"] == "192.168.1.20:50052,192.168.1.21:50052"
    back = read_kcpps(out)
    assert back.rpc_targets == ["192.168.1.20:50052", "192.168.1.21:50052"]
    assert back.settings.tensor_split == (30, 10, 25) and back.settings.gpulayers == 65
    assert any("other PCs over RPC" in n for n in back.notes)


@pytest.mark.parametrize("extra, words", [
    ({"rpcmode": "host"}, "phoenix share"),
    ({"rpcmode": "connect", "rpctargets": ""}, "names no PC"),
    ({"rpcmode": "connect", "rpctargets": "a:1,a:1"}, "listed twice"),
    ({"rpcmode": "connect", "rpctargets": "[::1]:5"}, "IPv6"),
    ({"rpcmode": "teleport"}, "rpcmode"),
])
def test_kcpps_rpc_faults_are_one_sentence(tmp_path, extra, words):
    p = tmp_path / "c.kcpps"
    p.write_text(json.dumps({"model_param": "m.gguf", "gpulayers": 10, **extra}))
    with pytest.raises(KcppsError) as e:
        read_kcpps(p)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_usecpu_with_connect_keeps_the_layers(tmp_path):
    p = tmp_path / "c.kcpps"
    p.write_text(json.dumps({"model_param": "m.gguf", "gpulayers": 10, "usecpu": True, "rpcmode": "connect",
                             "rpctargets": "10.0.0.2:50052"}))
    assert read_kcpps(p).settings.gpulayers == 10


# --- failures named by PC (koboldcpp 1.115.1's own lines, as tests/test_cluster.py sees them live) ---

NODES = {"127.0.0.1:5651": "gaming-pc", "127.0.0.1:5652": "laptop"}


def test_a_node_that_is_not_an_rpc_server_is_named_not_called_oom():
    lines = ["Use RPC server: 127.0.0.1:5651",
             "ggml/src/ggml-rpc/ggml-rpc.cpp:337: Remote RPC server crashed or returned malformed response"]
    f = classify(lines, -6, during_load=True, nodes=NODES)
    assert f.kind == "node" and f.node == "127.0.0.1:5651" and "gaming-pc (127.0.0.1:5651)" in f.message
    assert classify(lines, -6, during_load=True).kind == "oom"  # what the old diagnosis said


def test_a_node_without_a_device_at_load_is_named():
    lines = ["Use RPC server: 127.0.0.1:5651", "Use RPC server: 127.0.0.1:5652",
             "llama_prepare_model_devices: using device RPC0 (127.0.0.1:5651) (unknown id) - 24105 MiB free",
             "load_tensors: offloaded 3/3 layers to GPU"]
    f = classify(lines, 0, during_load=True, nodes=NODES)
    assert f.kind == "node" and f.node == "127.0.0.1:5652" and "laptop" in f.message and "CPU" in f.message


def test_a_version_mismatch_and_a_lost_node():
    v = classify(["Use RPC server: 127.0.0.1:5652", "RPC server version mismatch: 3.0.0"], 0, True, nodes=NODES)
    assert v.kind == "node" and "laptop" in v.message and "3.0.0" in v.message
    lost = classify(["using device RPC0 (127.0.0.1:5651) (unknown id) - 1 MiB free",
                     "send failed (bytes_sent=0, size_to_send=8)",
                     "ggml/src/ggml-rpc/ggml-rpc.cpp:488: Remote RPC server crashed or returned malformed response"],
                    -6, during_load=False, nodes=NODES)
    assert lost.kind == "node" and lost.node is None  # the log does not say which; the launch asks each PC


# --- phoenix plan ---

def _phoenix(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "phoenix_gui.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_phoenix_plan_shows_machines_as_groups(tmp_path):
    r = _phoenix("plan", "--preset", "qwen2.5-32b-instruct-q4_k_m", "--rig", str(rig_file(tmp_path)),
                 "--split", "37", "5", "23")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    titles = [ln for ln in out.splitlines() if ln and not ln.startswith(" ") and ln.endswith(("(given)", "this PC:"))]
    assert titles == ['"gaming-pc" (192.168.1.20:50052): link 0.50 ms round trip, 112 MB/s (given)',
                      '"laptop" (192.168.1.21:50052): link 2.00 ms round trip, 50 MB/s (given)', "this PC:"]
    assert out.index("RTX 3060 (gaming-pc)") < out.index('"laptop" (192.168') < out.index("this PC:") < out.index("RTX 2080")
    assert "ms per generated token" in out and "Loading sends" in out
    assert "--rpctargets 192.168.1.20:50052,192.168.1.21:50052" in out


def test_phoenix_plan_json_names_each_devices_pc(tmp_path):
    r = _phoenix("plan", "--preset", "qwen2.5-7b-instruct-q4_k_m", "--rig", str(rig_file(tmp_path)), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["machines"] == ["gaming-pc", "laptop", "this PC", "this PC"]
    assert [n["address"] for n in d["nodes"]] == ["192.168.1.20:50052", "192.168.1.21:50052"]
    assert d["network_s_per_token"] > 0.0025  # two runs on other PCs: 0.5 + 2 ms round trips at least


def test_phoenix_plan_rpc_faults(tmp_path):
    bad = _phoenix("plan", "--demo", "--rpc", "127.0.0.1")
    assert bad.returncode == 2 and "needs a port" in bad.stderr and "Traceback" not in bad.stderr
    port = free_port()  # nothing listens there
    down = _phoenix("plan", "--demo", "--rpc", f"127.0.0.1:{port}")
    assert down.returncode == 1, down.stderr
    last = down.stderr.strip().splitlines()[-1]
    assert f"127.0.0.1:{port}" in last and "nothing listens" in last and "Traceback" not in down.stderr
    twice = _phoenix("plan", "--preset", "tiny-llama-f16", "--rig", str(rig_file(tmp_path)), "--rpc", "192.168.1.20:50052")
    assert twice.returncode == 2 and "already a node" in twice.stderr


def test_a_shared_cpu_says_koboldcpps_rpc_host_runs_four_threads(cluster):
    """koboldcpp 1.115.1's RPC host computes a shared CPU with 4 threads whatever the PC has (measured on
    a 2-core PC: hundreds of ms per token, benchmarks/rpc_timeline.py): a plan with layers there says so;
    one without layers there, or a shared GPU, does not."""
    from phoenix_gui.model import preset_model_info

    m = preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    laptop = next(i for i, g in enumerate(cluster.gpus) if g.node.startswith("192.168.1.21"))
    gaming = next(i for i, g in enumerate(cluster.gpus) if g.node.startswith("192.168.1.20"))
    on_cpu = make_plan(m, cluster, PlanSettings(context=2048, devices=(laptop,), gpulayers=10))
    on_gpu = make_plan(m, cluster, PlanSettings(context=2048, devices=(gaming,), gpulayers=10))
    assert any("4 threads" in w and "laptop" in w for w in on_cpu.warnings)
    assert not any("4 threads" in w for w in on_gpu.warnings)
