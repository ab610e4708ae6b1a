"""Speed model v3 (issue 19): the ordering sanity checks a user comparing quant types and cards expects,
and the band a plan shows (its quant family and device class, "few measurements" where true)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from phoenix_gui.hardware.rig import GIB, GpuInfo, Rig, SystemInfo
from phoenix_gui.hardware.specs import gpu_specs
from phoenix_gui.model import preset_model_info
from phoenix_gui.model.ggml_types import bits_per_weight, kernel_family, type_by_name
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.planner.speed import speed_bands, speed_constants

Q4_K, Q6_K = type_by_name("q4_k"), type_by_name("q6_k")


def requant(model, main: str, file_type: str, keep_output: bool = True):
    """The model with every Q4_K/Q6_K weight in another type, its bytes from the type's exact block size."""
    t_main = type_by_name(main)

    def conv(t):
        if t.ggml_type not in (Q4_K, Q6_K) or (keep_output and t.name == "output.weight"):
            return t
        n = 1
        for x in t.shape:
            n *= x
        return replace(t, ggml_type=t_main, nbytes=int(n * bits_per_weight(t_main) / 8))

    layers = [replace(layer, tensors=[conv(t) for t in layer.tensors]) for layer in model.layers]
    return replace(model, layers=layers, output_tensors=[conv(t) for t in model.output_tensors],
                   input_tensors=[conv(t) for t in model.input_tensors], file_type=file_type,
                   file_size=0)


def cpu_rig(name: str, cores: int, gbs: float) -> Rig:
    return Rig(name, [], SystemInfo(256 * GIB, 250 * GIB, cores, 2 * cores, gbs, "rig file", cpu_name=name),
               simulated=True)


def tps(model, rig, **kw) -> float:
    return make_plan(model, rig, PlanSettings(context=4096, backend="llama-server", **kw)).predicted_tokens_per_s


def test_a_smaller_quant_with_more_layers_on_the_gpus_is_not_slower_in_ram(q32, seed_rig):
    """Issue 19: dense 32B on the seed rig, Q3_K_S with 10 layers in RAM was predicted slower (2.2 T/s) than
    Q4_K_M with 23 layers in RAM (3.3 T/s), from a low-bit factor applied to the CPU share. The CPU's part
    of a token must shrink with 13 fewer, smaller layers; what remains of a difference is the named GPU
    kernel cost of 2-3 bit k-quants (measured: a P40 runs Q3_K_S at 31 t/s, Q4_K_M at 49, PR #2707)."""
    from phoenix_gui.planner.speed import token_seconds

    q3 = requant(q32, "q3_k", "Q3_K_S")
    s = PlanSettings(context=16384, tensor_split=(1.5, 4.5, 3))
    p4 = make_plan(q32, seed_rig, s.with_(gpulayers=q32.n_layer + 1 - 23))
    p3 = make_plan(q3, seed_rig, s.with_(gpulayers=q3.n_layer + 1 - 10))
    assert p4.cpu.layers == 23 and p3.cpu.layers == 10
    cpu_time = lambda p: token_seconds([p.speed_inputs.devices[-1]]) - token_seconds([])  # noqa: E731
    assert cpu_time(p3) < cpu_time(p4)
    if p3.predicted_tokens_per_s < p4.predicted_tokens_per_s:
        c = speed_constants()
        assert c["gpu_cost"]["k23"] > c["gpu_cost"]["k45"]


@pytest.mark.parametrize("where", ["gpu", "cpu"])
def test_a_smaller_quant_is_slower_only_where_a_named_kernel_cost_says_so(q32, seed_rig, where):
    """Same rig, same layers: a type with fewer bytes per weight is predicted slower only when its kernel
    family costs more per weight than the larger type's (gpu_cost / cpu_cost in the constants)."""
    c = speed_constants()
    m = preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    if where == "gpu":
        rig, kw, table = replace(seed_rig, gpus=[seed_rig.gpus[1]]), {}, c["gpu_cost"]  # the RTX 2080, all layers
    else:
        rig, kw, table = cpu_rig("Intel Core i7-8700", 6, 41.6), {"gpulayers": 0}, c["cpu_cost"]
    variants = [(t, requant(m, t, t.upper())) for t in ("q2_k", "q3_k", "iq2_xxs", "q4_0", "q4_k", "q5_k", "q6_k", "q8_0", "f16")]
    speed = {t: tps(mm, rig, **kw) for t, mm in variants}
    for small, _ in variants:
        for large, _ in variants:
            if bits_per_weight(type_by_name(small)) < bits_per_weight(type_by_name(large)) and speed[small] < speed[large]:
                fs, fl = kernel_family(type_by_name(small)), kernel_family(type_by_name(large))
                assert table[fs] > table[fl], f"{small} predicted slower than {large} on the {where} without a kernel cost"


def test_q4_0_is_faster_than_q8_0_on_a_cpu():
    """Bandwidth per byte plus the per-type dot product: real CPUs run Q4_0 about 1.5x faster than Q8_0
    (ik_llama.cpp PR #54, mainline column: Ryzen 7950X at 4 threads 11.25 vs 7.56 t/s, Threadripper 5975WX at
    8 threads 11.90 vs 8.13). A per-weight compute term alone made them the same speed."""
    m = preset_model_info("llama-3.1-8b-instruct-q4_k_m")
    q40, q80 = requant(m, "q4_0", "Q4_0", keep_output=False), requant(m, "q8_0", "Q8_0", keep_output=False)
    for rig, threads in ((cpu_rig("AMD Ryzen 9 7950X (16C)", 16, 89.6), 4),
                         (cpu_rig("AMD Ryzen Threadripper PRO 5975WX", 32, 204.8), 8),
                         (cpu_rig("Intel Core i7-8700", 6, 41.6), 6)):  # dual-channel DDR4: bandwidth-bound
        a, b = tps(q40, rig, gpulayers=0, threads=threads), tps(q80, rig, gpulayers=0, threads=threads)
        assert a > 1.3 * b, (rig.name, a, b)


def _card(spec, i=0) -> GpuInfo:
    cc = tuple(int(x) for x in spec.compute_capability.split(".")[:2])
    vram = int(spec.vram_gib * GIB)
    return GpuInfo(i, spec.name, f"GPU-{i}", f"0000:{i + 1:02x}:00.0", vram, vram, 0, cc, spec.architecture,
                   spec.bandwidth_gbs, "table")


def test_a_slower_card_is_never_predicted_faster_for_the_same_share():
    """Every pair of consumer/workstation cards in the spec table of the same or an older generation:
    one with no more bandwidth and no more compute than the other never gets the model done faster."""
    order = ["Pascal", "Turing", "Ampere", "Ada Lovelace", "Blackwell"]
    m = preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    cards = [s for s in gpu_specs() if s.architecture in order and s.vram_gib >= 6 and s.bandwidth_gbs < 1500]
    speed = {}
    for s in cards:
        rig = Rig(s.name, [_card(s)], SystemInfo(64 * GIB, 60 * GIB, 8, 16, 50.0, "rig file"), simulated=True)
        speed[s.name] = tps(m, rig)
    bad = []
    for a in cards:
        for b in cards:
            slower = (a.bandwidth_gbs <= b.bandwidth_gbs and a.fp32_tflops <= b.fp32_tflops
                      and (a.bandwidth_gbs, a.fp32_tflops) != (b.bandwidth_gbs, b.fp32_tflops)
                      and order.index(a.architecture) <= order.index(b.architecture))
            if slower and speed[a.name] > speed[b.name] * 1.0001:
                bad.append(f"{a.name} {speed[a.name]:.1f} > {b.name} {speed[b.name]:.1f}")
    assert not bad, bad[:5]


def test_the_band_comes_from_the_plans_family_and_class_and_says_few_measurements(q32, seed_rig):
    """The seed rig's GTX 1050 Ti / 1060 are small Pascal chips, which no public row measures: the plan says
    so and its band is wider than a plan of the same model on a card the data knows."""
    bands = speed_bands()
    assert bands["small Pascal"]["n"] < 5 and bands["K Q4-Q6"]["n"] >= 5
    p = make_plan(q32, seed_rig, PlanSettings(context=4096, gpulayers=40, tensor_split=(1.5, 4.5, 3)))
    assert (p.speed_family, p.speed_class) == ("K Q4-Q6", "small Pascal")
    assert p.speed_band_note.startswith("few measurements") and "small Pascal: 0 rows" in p.speed_band_note
    big = make_plan(q32, replace(seed_rig, gpus=[seed_rig.gpus[1]]), PlanSettings(context=4096, gpulayers=20))
    assert big.speed_class == "other GPU" and big.speed_band_note == ""
    width = lambda pl: pl.speed_band[1] / pl.speed_band[0]  # noqa: E731
    assert width(p) > width(big)
    d = p.to_dict()
    assert d["speed_band_note"] == p.speed_band_note and d["speed_class"] == "small Pascal"
    cpu = make_plan(q32, seed_rig, PlanSettings(context=4096, gpulayers=0, devices=()))
    assert cpu.speed_class == "CPU"
