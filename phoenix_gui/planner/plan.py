"""make_plan: placement + per-device memory ledger + predicted speed for one configuration."""

from __future__ import annotations

from dataclasses import dataclass
from operator import add

from ..hardware.cluster import is_cpu_device, machine_of
from ..hardware.rig import MIB, GpuInfo, Rig
from ..model.info import ModelInfo
from ..validate import split_weights
from .calibration import calibrated_tokens_per_second, extra_bytes
from .compute import ComputeInputs, device_compute, host_compute
from .kv import kv_bytes_per_layer, kv_cells
from .ledger import DevicePlan, Plan
from .network import check_engine_order, load_time_notes
from .placement import (CPU, cuda_padding, host_model_buffers, host_tensors, layer_counts, moecpu_overrides,
                        plan_layers, row_split_weights, tensor_moves)
from .settings import PlanSettings, check_settings
from .speed import UNKNOWN_BANDWIDTH_GBS as UNKNOWN_REMOTE_GBS
from .speed import (SpeedInputs, band_note, device_class, prompt_tokens_per_second, quant_family, speed_band,
                    tokens_per_second)
from .speed_inputs import speed_inputs


# A node sharing its CPU and RAM runs koboldcpp --rpcmode host: 68 MiB resident when idle, +2 MiB once a
# client has loaded (measured, 1.115.1). Counted whole: a rig file's free figure may predate the host.
REMOTE_CPU_HOST_MIB = 70
# The engine's RPC host computes a shared CPU with a fixed number of threads (EngineProfile.rpc_host_cpu_threads):
# on a PC with fewer free cores a token waits on thread contention. benchmarks/rpc_timeline.py measured 240-320 ms
# of compute per token for a tiny model on a 2-core PC and a real run gave ~2 tokens/s (~500 ms); the band's floor
# allows up to this much per token.
RPC_CPU_WAIT_S = 1.0


def cuda_overhead(settings: PlanSettings, rig: Rig) -> int:
    if settings.cuda_overhead_mib is not None:
        return int(settings.cuda_overhead_mib * MIB)
    return (450 if rig.os == "windows" else 300) * MIB


def selected_gpus(rig: Rig, settings: PlanSettings) -> list[GpuInfo]:
    if settings.devices is None:
        return list(rig.gpus)
    return [rig.gpus[i] for i in settings.devices if 0 <= i < len(rig.gpus)]


def default_split(gpus: list[GpuInfo], overhead: int, rule: str = "free") -> list[float]:
    """The engine's split when none is given (EngineProfile.default_split): "free" = free memory
    at load, after its own CUDA context, as llama.cpp does; "total" = total memory."""
    if rule == "total":
        return [float(g.total_bytes) for g in gpus]
    # another PC's device: the free memory its RPC server reports at load, its own context already made
    return [float(max(0, g.free_bytes - (0 if g.is_remote else overhead))) for g in gpus]


def split_ignored(settings: PlanSettings, gpus: list[GpuInfo]) -> bool:
    """An engine that applies the split only in its GPU libraries (EngineProfile.split_needs_gpu_library:
    koboldcpp) runs its CPU library when the plan uses only other PCs' devices (commandline: --usecpu),
    which splits by each device's free memory."""
    return settings.profile.split_needs_gpu_library and bool(gpus) and all(g.is_remote for g in gpus)


def _layer_bytes(model: ModelInfo, moecpu: int) -> tuple[list[int], list[int]]:
    """(bytes on the layer's device, expert bytes forced to RAM) per block."""
    on_dev, to_cpu = [], []
    for layer in model.layers:
        moved = layer.expert_bytes if layer.index < moecpu else 0
        on_dev.append(layer.nbytes - moved)
        to_cpu.append(moved)
    return on_dev, to_cpu


def make_plan(model: ModelInfo, rig: Rig, settings: PlanSettings) -> Plan:
    """One configuration's plan, stage by stage: which device each layer goes to, the bytes each device
    holds, the device ledgers, the warnings, the predicted speed."""
    s = settings
    check_settings(s, len(rig.gpus))  # a plan is never built on nonsense (raises InputError)
    gpus = selected_gpus(rig, s)
    check_engine_order(rig, gpus)
    overhead = cuda_overhead(s, rig)
    place = _place(model, s, gpus, overhead)
    tally = _tally(model, s, gpus, place.assign)
    devices = _devices(model, rig, s, gpus, place.assign, tally, overhead)
    warnings, caveat = _warnings(model, rig, s, gpus, devices)
    speed = _speed(model, rig, s, gpus, devices, place.assign, tally, caveat)
    return Plan(
        model_name=model.name, n_layer=model.n_layer, gpulayers=place.ngl,
        tensor_split=[round(x, 4) for x in place.split], context=s.context, kv_cells=tally.cells, devices=devices,
        assign=place.assign, predicted_tokens_per_s=speed.tps, predicted_prompt_tokens_per_s=speed.pp,
        pipeline_parallel=tally.pipeline, approximate=tally.approximate, settings=s,
        warnings=place.warnings + tally.warnings + warnings,
        layer_bytes=max(map(add, tally.dev_bytes, tally.kv), default=0), speed_inputs=speed.inputs,
        speed_band=speed.band, speed_caveat=caveat, speed_regime=speed.inputs.regime,
        speed_family=speed.family, speed_class=speed.dclass, speed_band_note=band_note(speed.family, speed.dclass),
        tokens_per_s_empty=speed.empty, tokens_per_s_full=speed.full,
    )


@dataclass
class _Placement:
    """Stage 1: the layers the GPUs get (ngl), the split the engine is given, each layer's device."""
    ngl: int
    split: list[float]
    assign: list[int]  # per block, then the output layer: an index into the plan's GPUs, or CPU
    warnings: list[str]


def _place(model: ModelInfo, s: PlanSettings, gpus: list[GpuInfo], overhead: int) -> _Placement:
    eng = s.profile
    n_gpu, n_layer = len(gpus), model.n_layer
    warnings: list[str] = []
    ngl = n_layer + 1 if s.gpulayers is None else max(0, min(s.gpulayers, n_layer + 1))
    if n_gpu == 0:
        ngl = 0
    # the weights the engine will read (validate.split_weights), so the layers are placed by the same numbers
    split = split_weights(s.tensor_split) if s.tensor_split and any(x > 0 for x in s.tensor_split) else None
    if split is not None and split_ignored(s, gpus):
        split = None
        if n_gpu > 1:  # over one device a split means nothing anyway
            warnings.append("koboldcpp without a GPU on this PC ignores --tensor_split: the layers go by each "
                            "other PC's free memory, as planned here.")
    by_free = split is None and n_gpu > 0
    if by_free:
        split = default_split(gpus, overhead, eng.default_split)
    split = (split or [])[:n_gpu] + [0.0] * max(0, n_gpu - len(split or []))
    assign = plan_layers(n_layer, ngl, split, eng.output_layer_first) if n_gpu else [CPU] * (n_layer + 1)
    if by_free:
        # Emit what the engine would do as exact layer counts: the free-memory default is a
        # snapshot that changes with whatever else runs at load time.
        split = [float(c) for c in layer_counts(assign, n_gpu)]
    return _Placement(ngl, split, assign, warnings)


@dataclass
class _Tally:
    """Stage 2: what each device holds (weights, KV cache, layers) for a placement, and the engine's
    buffers that follow from it. Lists are per plan GPU; the cpu_ fields are the CPU's."""
    dev_bytes: list[int]  # per block: bytes on the block's device
    cpu_expert: list[int]  # per block: expert bytes kept in RAM (--moecpu, overrides)
    kv: list[int]  # per block: KV cache bytes
    cells: int
    n_seq: int
    ci: ComputeInputs
    w: list[int]
    kvb: list[int]
    layers: list[int]
    first: list[int | None]
    last: list[int | None]
    cpu_w: int
    cpu_kv: int
    cpu_layers: int
    out_dev: int
    moves: list[dict[int, int]]  # per block and output layer: device -> bytes the overrides move there
    pipeline: bool
    scratch_dev: int | None
    scratch: int
    approximate: bool
    host_bufs: dict[str, int]
    warnings: list[str]


def _tally(model: ModelInfo, s: PlanSettings, gpus: list[GpuInfo], assign: list[int]) -> _Tally:
    eng = s.profile
    n_gpu, n_layer = len(gpus), model.n_layer
    warnings: list[str] = []
    moecpu = s.moecpu if model.is_moe else 0
    # with tensor overrides, --moecpu's patterns follow the user's (first match wins): all moved below
    dev_bytes, cpu_expert = _layer_bytes(model, 0 if s.overrides else moecpu)
    cells, n_seq, kv, ci = _cache(model, s, warnings)

    w = [0] * n_gpu
    kvb = [0] * n_gpu
    layers = [0] * n_gpu
    first: list[int | None] = [None] * n_gpu
    last: list[int | None] = [None] * n_gpu
    cpu_w = model.input_bytes
    cpu_kv = 0
    cpu_layers = 0
    cpu_matrix = 0  # largest RAM-resident matmul weight (op-offload scratch)
    for il in range(n_layer):
        d = assign[il]
        cpu_w += cpu_expert[il]
        if cpu_expert[il]:
            cpu_matrix = max(cpu_matrix, model.layers[il].largest_matrix(experts_only=True))
        if d == CPU:
            cpu_w += dev_bytes[il]
            cpu_kv += kv[il]
            cpu_layers += 1
            cpu_matrix = max(cpu_matrix, model.layers[il].largest_matrix())
            continue
        w[d] += dev_bytes[il]
        layers[d] += 1
        if first[d] is None:
            first[d] = il
        last[d] = il
        if s.lowvram:
            cpu_kv += kv[il]
        else:
            kvb[d] += kv[il]
    out_dev = assign[n_layer]
    out_bytes = sum(t.nbytes for t in model.output_tensors)
    if out_dev == CPU:
        cpu_w += out_bytes
        cpu_layers += 1
        cpu_matrix = max(cpu_matrix, max((t.nbytes for t in model.output_tensors if len(t.shape) > 1), default=0))
    else:
        w[out_dev] += model.output_bytes  # tied embeddings are duplicated onto the output device
        layers[out_dev] += 1
        first[out_dev] = n_layer if first[out_dev] is None else first[out_dev]
        last[out_dev] = n_layer
    moves: list[dict[int, int]] = []
    if s.overrides and n_gpu:  # a CPU-only engine has one device and ignores overrides
        moves, largest = tensor_moves(model, assign, [*s.overrides, *moecpu_overrides(moecpu)])
        cpu_matrix = max(cpu_matrix, largest)
        for il, mv in enumerate(moves):
            for dest, b in mv.items():
                for d, sign in ((assign[il], -1), (dest, 1)):
                    if d == CPU:
                        cpu_w += sign * b
                    else:
                        w[d] += sign * b
                if dest == CPU and il < n_layer:
                    cpu_expert[il] += b  # the speed model reads these layers' experts from RAM

    pipeline, scratch_dev, scratch = _pipeline_and_scratch(s, gpus, assign, moecpu, cpu_matrix)
    approximate = s.split_mode == "row" and n_gpu > 1
    if approximate:
        w = row_split_weights(model, assign, gpus, s, dev_bytes, w)
        warnings.append("Row split is estimated: matrices are divided by rows across all GPUs; numbers are approximate.")
    # CUDA devices (this PC's or another's over RPC) pad quantized rows and align tensors (EngineProfile)
    for i, g in enumerate(gpus):
        if not is_cpu_device(g) and not approximate:
            w[i] += cuda_padding(model, assign, i, eng)
    local_gpu = any(not g.is_remote for g in gpus)
    host_ot = [*s.overrides, *moecpu_overrides(moecpu)] if n_gpu else []
    host_bufs = host_model_buffers(host_tensors(model, assign, host_ot), mmap=s.mmap,
                                   repack_types=eng.repack_types(s.mmap, local_gpu),
                                   plain="CUDA_Host" if local_gpu else "CPU")
    return _Tally(dev_bytes, cpu_expert, kv, cells, n_seq, ci, w, kvb, layers, first, last, cpu_w, cpu_kv, cpu_layers,
                  out_dev, moves, pipeline, scratch_dev, scratch, approximate, host_bufs, warnings)


def _cache(model: ModelInfo, s: PlanSettings, warnings: list[str]) -> tuple[int, int, list[int], ComputeInputs]:
    """(KV cells, sequences, KV cache bytes per block, the compute buffers' inputs); a V cache type the
    engine will not use is said in `warnings`."""
    eng = s.profile
    type_k, type_v = s.kv_types()
    if (type_v != s.cache_type_v):
        warnings.append("A quantized V cache needs flash attention; V stays f16 "
                        + (f"({s.backend} quantizes only K)." if eng.quant_v_without_fa == "k_only"
                          else f"({s.backend} would refuse it)."))
    cells = kv_cells(s.context, eng)
    n_seq = eng.n_seq(s.parallel)
    kv = kv_bytes_per_layer(model, s.context, type_k, type_v, s.flash_attn, s.batch, eng, n_seq)
    n_ubatch = min(s.batch, cells)
    ci = ComputeInputs(n_ubatch=n_ubatch, n_kv=cells, flash_attn=s.flash_attn,
                       n_outputs=n_ubatch if eng.logits_full_ubatch else 1)
    return cells, n_seq, kv, ci


def _pipeline_and_scratch(s: PlanSettings, gpus: list[GpuInfo], assign: list[int], moecpu: int,
                          cpu_matrix: int) -> tuple[bool, int | None, int]:
    """(pipeline parallelism on, the GPU that holds the op-offload scratch, its bytes)."""
    eng = s.profile
    n_gpu = len(gpus)
    all_offloaded = n_gpu > 0 and all(a != CPU for a in assign)
    # --moecpu is a tensor override too; an RPC device has no events and turns pipeline parallelism off
    pipeline = eng.pipeline_active(n_gpu, all_offloaded, s.split_mode == "layer", not s.lowvram,
                                   bool(s.overrides) or moecpu > 0, any(g.is_remote for g in gpus))
    # op offload copies a RAM weight to the first device that offers it; an RPC device does not (no offload_op)
    scratch_dev = next((i for i, g in enumerate(gpus) if not g.is_remote), None)
    scratch = cpu_matrix if (scratch_dev is not None and cpu_matrix and s.batch >= eng.op_offload_min_batch) else 0
    return pipeline, scratch_dev, scratch


def _devices(model: ModelInfo, rig: Rig, s: PlanSettings, gpus: list[GpuInfo], assign: list[int], t: _Tally,
             overhead: int) -> list[DevicePlan]:
    """Stage 3: each device's ledger (the plan's GPUs, then the CPU and RAM)."""
    eng = s.profile
    n_layer, out_dev, moves = model.n_layer, t.out_dev, t.moves
    devices: list[DevicePlan] = []
    # the desktop already uses what NVML reports; this is room for it to grow (compositor, browser)
    display_reserve = (s.display_reserve_mib if s.display_reserve_mib is not None
                       else (512 if rig.os == "windows" else 256)) * MIB
    for i, g in enumerate(gpus):
        scratch = t.scratch if i == t.scratch_dev else 0
        comp = device_compute(model, t.ci, has_layers=t.layers[i] - (1 if out_dev == i else 0) > 0
                              or any(mv.get(i) for mv in moves),
                              has_output=out_dev == i, gpu=True, host_weight_scratch=scratch,
                              pipeline_copies=eng.pipeline_copies if t.pipeline else 1)
        reserve = int((s.ram_margin_mib if is_cpu_device(g) else s.margin_mib) * MIB
                      + (display_reserve if g.display_attached else 0))
        devices.append(DevicePlan(
            name=_device_name(rig, g), kind="gpu", gpu_index=rig.gpus.index(g), layers=t.layers[i],
            first_layer=t.first[i], last_layer=t.last[i], has_output=out_dev == i, weights_bytes=t.w[i],
            kv_bytes=t.kvb[i], compute_bytes=comp, overhead_bytes=_device_overhead(rig, g, overhead),
            reserve_bytes=reserve, capacity_bytes=g.total_bytes, free_bytes=g.free_bytes,
            bandwidth_gbs=g.bandwidth_gbs, scratch_bytes=scratch,
        ))
    # layers whose tensors an override keeps in RAM are computed there too (logged on koboldcpp over RPC)
    host = host_compute(model, t.ci, cpu_layers=t.cpu_layers > (1 if out_dev == CPU else 0)
                        or any(mv.get(CPU) for mv in moves[:n_layer]),
                        cpu_output=out_dev == CPU or bool(moves and moves[n_layer].get(CPU)),
                        any_gpu=len(gpus) > 0, n_seq=t.n_seq)
    sysinfo = rig.system
    cpu_first = next((il for il in range(n_layer + 1) if assign[il] == CPU), None)
    cpu_last = max((il for il in range(n_layer + 1) if assign[il] == CPU), default=None)
    devices.append(DevicePlan(
        name="CPU / RAM", kind="cpu", gpu_index=None, layers=t.cpu_layers, first_layer=cpu_first, last_layer=cpu_last,
        has_output=out_dev == CPU, weights_bytes=t.cpu_w, kv_bytes=t.cpu_kv, compute_bytes=host,
        overhead_bytes=eng.process_ram_mib * MIB, reserve_bytes=int(s.ram_margin_mib * MIB),
        capacity_bytes=sysinfo.ram_total_bytes, free_bytes=sysinfo.ram_available_bytes,
        bandwidth_gbs=sysinfo.ram_bandwidth_gbs, expert_bytes_on_cpu=sum(t.cpu_expert),
        mmap_bytes=t.host_bufs.get("CPU_Mapped", 0), model_buffers=t.host_bufs,
        note="weights are memory-mapped (page cache)" if s.mmap and t.cpu_w else "",
    ))
    return devices


RECURRENT = ("mamba", "mamba2", "rwkv6", "rwkv7", "jamba", "nemotron_h", "qwen3next", "lfm2", "falcon-h1")


def _warnings(model: ModelInfo, rig: Rig, s: PlanSettings, gpus: list[GpuInfo],
              devices: list[DevicePlan]) -> tuple[list[str], str]:
    """Stage 4: what the plan cannot promise (after placement's and the tally's own warnings), and the
    caveat on its speed ("" when none)."""
    eng = s.profile
    warnings: list[str] = []
    if model.architecture in RECURRENT:
        warnings.append("Recurrent state of this architecture is not modelled; leave extra headroom.")
    local_old = [g for g in gpus if not g.is_remote and g.compute_capability < (7, 5)]  # a node runs its own build
    if local_old:
        old = ", ".join(sorted({g.short_name for g in local_old}))
        warnings.append(f"{old} need a CUDA 12 build (koboldcpp_cu12): CUDA 13 dropped cards older than Turing.")

    warnings += load_time_notes(rig, gpus, devices)
    shared_cpus = sorted({machine_of(rig, g) for g, d in zip(gpus, devices) if g.is_remote and is_cpu_device(g)
                          and d.layers})
    caveat = ""
    if shared_cpus and eng.rpc_host_cpu_threads:
        # on a 2-core PC benchmarks/rpc_timeline.py measures ~240-320 ms of compute per token for a tiny model
        n = eng.rpc_host_cpu_threads
        warnings.append(f"The engine's RPC host computes a shared CPU with {n} threads whatever the PC has: on "
                        f"{', '.join(shared_cpus)} with fewer than {n} free cores each token can wait hundreds of ms "
                        "on thread contention, which this prediction does not include; share a GPU rather than a CPU.")
        caveat = (f"unreliable: the engine's RPC host computes {', '.join(shared_cpus)}'s CPU with {n} threads, "
                  f"which can cost up to ~{RPC_CPU_WAIT_S:g} s per token (not in the prediction)")
    unknown = sorted({machine_of(rig, g) for g in gpus if g.bandwidth_gbs <= 0})
    if unknown:
        warnings.append(f"The memory speed of {', '.join(unknown)}'s devices is unknown (share them with phoenix share "
                        f"to tell it); the predicted speed assumes {UNKNOWN_REMOTE_GBS:g} GB/s.")
    return warnings, caveat


@dataclass
class _Speed:
    """Stage 5: the predicted speed (calibrated on this PC when the rig carries a calibration)."""
    inputs: SpeedInputs
    tps: float
    pp: float
    empty: float  # tokens/s with an empty cache
    full: float  # and with a full one
    family: str
    dclass: str
    band: tuple[float, float]


def _speed(model: ModelInfo, rig: Rig, s: PlanSettings, gpus: list[GpuInfo], devices: list[DevicePlan],
           assign: list[int], t: _Tally, caveat: str) -> _Speed:
    speed = speed_inputs(model, rig, gpus, devices, assign, t.kv, s, t.cpu_expert, t.cells)
    model_tps = tokens_per_second(speed)
    tps = calibrated_tokens_per_second(rig, gpus, speed, model_tps)  # measured on this PC, if any
    pp = prompt_tokens_per_second(speed.devices, s.batch)
    # the same with an empty and a full cache, scaled like the calibrated figure
    empty, full = (tps * tokens_per_second(speed, fill=f) / model_tps for f in (0.0, 1.0))
    family, dclass = quant_family(model.file_type), device_class(speed)
    band = speed_band(tps, speed.regime, speed.moe, family, dclass)
    if caveat:  # the floor includes the wait the engine's RPC host can add to every token
        band = (1.0 / (1.0 / max(band[0], 1e-9) + RPC_CPU_WAIT_S), band[1])
    return _Speed(speed, tps, pp, empty, full, family, dclass, band)


# --- the devices of other PCs (the network: planner/network.py) ---

def _device_name(rig: Rig, g: GpuInfo) -> str:
    return f"{g.short_name} ({machine_of(rig, g)})" if g.is_remote else g.short_name


def _device_overhead(rig: Rig, g: GpuInfo, cuda_context: int) -> int:
    """A local GPU: this PC's CUDA context (+ what a tune saw). A node's GPU: the node's engine keeps its
    own CUDA context there; a node's CPU: the RPC host process."""
    if not g.is_remote:
        return cuda_context + extra_bytes(rig, g)
    return REMOTE_CPU_HOST_MIB * MIB if is_cpu_device(g) else cuda_context
