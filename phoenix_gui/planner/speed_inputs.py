"""What a generated token reads on each device of a plan, by kernel family, and how the devices hand it
on: the speed model's inputs (planner/speed.py turns them into tokens/s)."""

from __future__ import annotations

from ..engines import OLD
from ..hardware.cluster import is_cpu_device
from ..hardware.specs import find_spec
from ..model.ggml_types import kernel_family
from .network import network_seconds
from .placement import CPU
from .speed import UNKNOWN_BANDWIDTH_GBS as UNKNOWN_REMOTE_GBS
from .speed import SMALL_PASCAL_CHIPS, SpeedDevice, SpeedInputs, cpu_isa_of, cpu_theoretical_bandwidth, default_threads


# id(model) -> (model, per layer: (dense, experts) weights by kernel family, the output layer's); a model's
# tensors do not change, and auto-fit plans one model hundreds of times
_MIX: dict[int, tuple] = {}


def _type_mix(model) -> tuple[list[tuple[dict, dict]], dict]:
    got = _MIX.get(id(model))
    if got is not None and got[0] is model:
        return got[1], got[2]

    def add(into: dict, t) -> None:
        n = 1
        for x in t.shape:
            n *= x
        f = kernel_family(t.ggml_type)
        into[f] = into.get(f, 0.0) + float(n)

    layers = []
    for layer in model.layers:
        dense: dict[str, float] = {}
        exp: dict[str, float] = {}
        for t in layer.tensors:
            add(exp if t.is_expert else dense, t)
        layers.append((dense, exp))
    out: dict[str, float] = {}
    for t in model.output_tensors:
        add(out, t)
    if model.tied_embeddings:  # llama.cpp reads token_embd again as the output matrix
        for t in model.input_tensors:
            if t.name.startswith("token_embd."):
                add(out, t)
    if len(_MIX) >= 64:
        _MIX.clear()
    _MIX[id(model)] = (model, layers, out)
    return layers, out


def speed_inputs(model, rig, gpus, devices, assign, kv, s, cpu_expert, cells) -> SpeedInputs:
    """What a generated token reads on each device, how the devices hand it on, and which build
    era and regime the plan is in (planner/speed.py turns this into tokens/s)."""
    cells = max(1, cells)
    fill = min(1.0, (s.kv_fill if s.kv_fill is not None else max(1, s.context // 4)) / cells)
    frac_active = (model.n_expert_used / model.n_expert) if model.is_moe else 1.0
    n = len(gpus)
    read = [0.0] * (n + 1)  # weights read per token; last entry: CPU
    kv_full = [0.0] * (n + 1)
    mix: list[dict[str, float]] = [{} for _ in range(n + 1)]  # weights read per token by kernel family
    layer_mix, out_mix = _type_mix(model)

    def take(i: int, m: dict, scale: float = 1.0) -> None:
        into = mix[i]
        for f, w in m.items():
            into[f] = into.get(f, 0.0) + w * scale

    hops = 0
    # without flash attention every query head reads its group's K and V again (GQA)
    gqa = [max(1, h // max(1, k)) for h, k in zip(model.n_head, model.n_head_kv)]
    # each layer's mix goes to its device; summed per device first (most layers share one), then once per device
    dense_on: list[list[int]] = [[] for _ in range(n + 1)]
    experts_on: list[list[int]] = [[] for _ in range(n + 1)]
    for il, layer in enumerate(model.layers):
        d = assign[il]
        idx = n if d == CPU else d
        exp_read = layer.expert_bytes * frac_active
        dense_on[idx].append(il)
        if cpu_expert[il]:
            read[n] += exp_read
            read[idx] += layer.dense_bytes
            experts_on[n].append(il)
            hops += 2 if d != CPU else 0  # to the CPU for the experts and back
        else:
            read[idx] += layer.dense_bytes + exp_read
            experts_on[idx].append(il)
        kv_full[n if (d == CPU or s.lowvram) else d] += kv[il] * (1 if s.flash_attn else gqa[il])
        if s.lowvram and d != CPU:
            hops += 2  # attention runs where the cache is: to the CPU and back every layer
    for i in range(n + 1):  # inline: this runs for every layer of every plan auto-fit tries
        into = mix[i]
        for part, layers, scale in ((0, dense_on[i], 1.0), (1, experts_on[i], frac_active)):
            for il in layers:
                for f, w in layer_mix[il][part].items():
                    into[f] = into.get(f, 0.0) + w * scale
    hops += sum(1 for a, b in zip(assign, assign[1:]) if a != b)  # layer boundaries, output layer
    out = assign[model.n_layer]
    read[n if out == CPU else out] += model.output_bytes  # with tied embeddings: token_embd again
    take(n if out == CPU else out, out_mix)
    read[n] += model.n_embd * 4  # one embedding row
    bpw = model.tensor_bytes * 8 / model.n_params if model.n_params else 4.5
    mixes = [tuple(sorted(m.items())) for m in mix]
    sd = []
    for i, g in enumerate(gpus):
        bw_g = g.bandwidth_gbs if g.bandwidth_gbs > 0 else UNKNOWN_REMOTE_GBS
        if is_cpu_device(g) or g.bandwidth_gbs <= 0:  # a node's CPU and RAM: bandwidth only, threads unknown
            sd.append(SpeedDevice("cpu", "cpu", bw_g, read[i] + kv_full[i] * fill, devices[i].layers,
                                  devices[i].weights_bytes, kv_full[i] * fill, kv_full[i], bits_per_weight=bpw,
                                  mix=mixes[i]))
            continue
        spec = find_spec(g.name, round(g.total_bytes / (1 << 30)))
        small = bool(spec and spec.architecture == "Pascal" and spec.chip in SMALL_PASCAL_CHIPS)
        sd.append(SpeedDevice("gpu", g.architecture, g.bandwidth_gbs, read[i] + kv_full[i] * fill, devices[i].layers,
                              devices[i].weights_bytes, kv_full[i] * fill, kv_full[i],
                              spec.fp32_tflops if spec else 0.0, g.compute_capability >= (6, 1), bpw,
                              mix=mixes[i], small_pascal=small))
    cpu = devices[-1]
    sysinfo = rig.system
    bw = cpu_theoretical_bandwidth(sysinfo.ram_bandwidth_gbs, sysinfo.ram_bandwidth_source)
    rule = getattr(s.profile, "default_threads", "physical")  # the engine profile's thread rule
    threads = s.threads or default_threads(rule, sysinfo.logical_cores, sysinfo.physical_cores, sysinfo.cpu_name)
    if sysinfo.physical_cores:
        threads = min(threads, sysinfo.physical_cores)  # a second hyperthread adds no arithmetic units
    sd.append(SpeedDevice("cpu", "cpu", bw, read[n] + kv_full[n] * fill, cpu.layers,
                          cpu.weights_bytes - model.input_bytes, kv_full[n] * fill, kv_full[n],
                          threads=threads, bits_per_weight=bpw, mix=mixes[n], isa=cpu_isa_of(sysinfo.cpu_name)))
    used = [i for i in range(n) if read[i] > 0]
    if not used:
        regime = "cpu"
    elif cpu.layers or any(cpu_expert) or (s.lowvram and any(kv)):
        regime = "hybrid"
    else:
        regime = "multi_gpu" if len(used) > 1 else "single_gpu"
    era = "old" if s.profile in OLD.values() else "current"
    net = network_seconds(rig, gpus, assign, model.n_embd, model.n_vocab)
    return SpeedInputs(sd, hops, era, fill, regime, model.is_moe, network_s=net)

