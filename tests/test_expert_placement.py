"""MoE experts placed per GPU (issue 20 item 4): every layer's attention and shared weights on the GPUs, each card
keeping the experts of as many of its own layers as fit, the rest in RAM, written as one tensor override.
Checked against the real koboldcpp 1.115.1: two RPC hosts on 127.0.0.1 stand for two cards (as the cluster
tests do); the plan's weights and KV per device and the host's buffers equal the engine's logged buffers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from phoenix_gui.backends.commandline import request_for
from phoenix_gui.engines.koboldcpp.options import koboldcpp_command
from phoenix_gui.backends.probe import probe_koboldcpp
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.hardware.rig import MIB
from phoenix_gui.model import preset_model_info, read_model, write_skeleton
from phoenix_gui.model.presets import load_preset
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.planner.autofit import _Evaluator, _expert_candidates, _moe_candidates, auto_fit
from phoenix_gui.planner.placement import experts_in_ram_overrides, host_model_buffers, host_tensors
from test_cluster import hosts  # noqa: F401 - the two RPC hosts on 127.0.0.1 that stand for two cards

MOE = ('[model]\nname = "Expert placement test"\nsize_label = "test"\narchitecture = "qwen3moe"\nblock_count = 8\n'
       'embedding_length = 512\nfeed_forward_length = 1536\nexpert_feed_forward_length = 512\nexpert_count = 8\n'
       'expert_used_count = 2\nhead_count = 8\nhead_count_kv = 2\nkey_length = 64\nvalue_length = 64\n'
       'vocab_size = 1024\ncontext_length = 4096\nrms_eps = 1e-6\nqk_norm = true\ntied_embeddings = false\n'
       'tokenizer_pre = "qwen2"\n[quant]\nrecipe = "F16"\n')


def test_the_override_names_blocks_as_one_pattern_that_koboldcpp_keeps():
    (rx, dev), = experts_in_ram_overrides([7, 2, 30, 2])
    assert dev == "CPU" and "," not in rx  # koboldcpp splits --overridetensors at commas
    import re

    hit = [f"blk.{i}.ffn_{w}_exps.weight" for i in (2, 7, 30) for w in ("up", "down", "gate")]
    miss = ["blk.3.ffn_up_exps.weight", "blk.2.attn_q.weight", "blk.12.ffn_up_exps.weight", "blk.2.ffn_gate_inp.weight",
            "blk.2.ffn_up_shexp.weight"]
    assert all(re.search(rx, n) for n in hit) and not any(re.search(rx, n) for n in miss)
    assert experts_in_ram_overrides([]) == ()


def test_on_the_seed_rig_every_card_keeps_experts_and_beats_moecpu_at_long_context():
    """Qwen3-30B-A3B at 16k on the seed's 1050 Ti + 2080 + 1060: --moecpu frees the first cards only; per-card
    placement keeps experts on all three and is predicted faster."""
    rig, model = load_rig(demo_rig_path()), preset_model_info("qwen3-30b-a3b-q4_k_m")
    base = PlanSettings(context=16384)
    ev = _Evaluator(model, rig)
    (moe_s, moe_p), = _moe_candidates(ev, base, (0, 1, 2))
    spread = [(s, p) for s, p in _expert_candidates(ev, base, (0, 1, 2), [7, 20, 14]) if p.fits]
    assert spread, "no per-card expert plan fits"
    s, p = max(spread, key=lambda sp: sp[1].predicted_tokens_per_s)
    assert p.fits and p.gpulayers == model.n_layer + 1 and s.moecpu == 0
    assert p.predicted_tokens_per_s > moe_p.predicted_tokens_per_s * 1.05
    in_ram = p.cpu.expert_bytes_on_cpu
    assert 0 < in_ram < moe_p.cpu.expert_bytes_on_cpu  # fewer experts in RAM than --moecpu needs
    assert all(d.weights_bytes > 0 and d.headroom_bytes >= 0 for d in p.gpus)
    fit = auto_fit(model, rig, base)  # and auto-fit considers it (the fastest within noise is picked)
    assert fit.plan.predicted_tokens_per_s >= p.predicted_tokens_per_s / 1.05


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("moe")
    (d / "moe.toml").write_text(MOE)
    return write_skeleton(load_preset(d / "moe.toml"), d / "moe-f16.gguf")


@pytest.mark.engine
def test_experts_spread_over_two_devices_match_the_engines_buffers(kcpp_script, moe_model, hosts):
    from test_cluster import cluster, per_endpoint

    from phoenix_gui.backends.logparse import device_of_buffer

    model = read_model(moe_model)
    addrs, _ = hosts
    real = cluster(addrs)
    # an RPC host sharing a CPU is kept a RAM margin (ram_margin_mib): none here, the memory is pretend anyway
    base = PlanSettings(context=1024, batch=256, threads=1, margin_mib=0, ram_margin_mib=0, use_mmap=True,
                        port=free_port())
    # two equal small "cards" (koboldcpp's CPU library splits by free memory, so equal memory keeps the engine's
    # split and the plan's the same), between what the layers need without their experts and with all of them
    lean = make_plan(model, real, base.with_(overrides=experts_in_ram_overrides(range(model.n_layer))))
    full = make_plan(model, real, base)
    lo, hi = max(d.total_bytes for d in lean.gpus), min(d.total_bytes for d in full.gpus)
    assert lo < hi
    small = (lo + hi) // 2
    rig = replace(real, gpus=[replace(g, total_bytes=small + 64 * MIB, free_bytes=small) for g in real.gpus])
    ev = _Evaluator(model, rig)
    every = _expert_candidates(ev, base, (0, 1))
    cands = [(s, p) for s, p in every if p.fits]
    assert cands, [[(d.name, d.layers, d.state, d.total_bytes // MIB) for d in p.devices] for _, p in every]
    # the candidate over both devices (one device alone holds every layer without experts here, and may be
    # predicted faster: one network hop fewer)
    s, plan = next((s, p) for s, p in cands if len(p.gpus) == 2)
    blocks = {int(b) for b in s.overrides[0][0].split("(")[1].split(")")[0].split("|")}
    on_dev = [{il for il in range(model.n_layer) if plan.assign[il] == k} for k in (0, 1)]
    assert 0 < len(blocks) < model.n_layer and all(on_dev[k] - blocks for k in (0, 1))  # both keep some experts
    argv = koboldcpp_command(request_for(plan, real, str(moe_model), exe=str(kcpp_script))).argv
    assert "--overridetensors" in argv and "--moecpu" not in argv
    rep, log = probe_koboldcpp(argv)
    assert "Override Tensor:" in log
    for d, a in zip(plan.gpus, addrs):
        assert per_endpoint(log, a, "model") == pytest.approx(d.weights_bytes / MIB, abs=0.01), a
        assert per_endpoint(log, a, "KV") == pytest.approx(d.kv_bytes / MIB, abs=0.01), a
    host = host_model_buffers(host_tensors(model, plan.assign, s.overrides), mmap=s.mmap,
                              repack_types=s.profile.repack_types(s.mmap, local_gpu=False))
    logged = {b: v for (b, kind), v in rep.buffers.items() if kind == "model" and device_of_buffer(b) == "cpu"}
    assert logged == pytest.approx({k: v / MIB for k, v in host.items()}, abs=0.01)


def test_the_wizard_keeps_autofits_expert_placement_and_saves_it(wiz, qtbot):
    """The split page's plan is auto-fit's (the overrides reach the plan, the command line and the
    explanation), and the saved settings bring it back."""
    from phoenix_gui.config import UserSettings, check_fields
    from phoenix_gui.model import preset_model_info

    st = wiz.state
    st.set_model(preset_model_info("qwen3-30b-a3b-q4_k_m"), None)
    st.set_context(16384)
    fit = st.run_auto_fit("fastest")
    assert fit.settings.overrides and st.overrides == fit.settings.overrides
    plan = st.plan()
    assert plan.fits and plan.cpu.expert_bytes_on_cpu > 0 and plan.settings.overrides == fit.settings.overrides
    assert "--overridetensors" in st.command().argv
    assert any("every card keeps the experts" in line for line in st.current_explanation())
    wiz.go_to("split")
    us = st.to_user_settings(UserSettings())
    assert us.overrides == [list(o) for o in fit.settings.overrides]
    back, bad = check_fields({"overrides": us.overrides})
    assert not bad and back.overrides == us.overrides
    for hostile in ([["a,b", "CPU"]], [["(", "CPU"]], [["x", "CPU; rm -rf /"]], [["x"]], "x", [["x", "CPU"]] * 65):
        assert check_fields({"overrides": hostile})[1] == ["overrides"]
