"""Tokens/s model: a generated token reads every active weight and the filled KV cache once,
device after device, and each device also has to do the arithmetic on what it reads.

time per token = engine overhead of the build era
  + per GPU: bytes read / (spec bandwidth x efficiency of its architecture)
             + per weight type: weights read x that type's kernel cost (gpu_cost: unpacking and the
               dot product, per weight) / the chip's FP32 rate, partly hidden behind the reads. Quantized
               types run llama.cpp's MMVQ kernel (int8 dot products, dp4a) from compute capability 6.1;
               below it (Kepler/Maxwell, GP100) they fall back to dequantize + f32 mat-vec: x no_dp4a_factor.
               F16 needs no unpacking and no int8 path.
             + a fixed cost per layer (kernel launches)
  + CPU:     max(bytes read / achieved RAM bandwidth,
                 per weight type: weights read x cpu_cost of the type / (threads x per-core rate of
                 the CPU's instruction set class: AVX2, AVX-VNNI, AVX-512, NEON))
             + a fixed cost per layer
  Bytes per weight are exact per type (model/ggml_types.bits_per_weight: a block's bytes over its weights).
  + a fixed cost per hop: every time the token's activations move between devices (layer
    boundaries, the output layer on another device, a KV cache or experts kept in RAM).
  + the network (devices other PCs share over RPC; planner/network.py network_seconds): per run of
    layers on another PC, the link's round trip plus the activations there and back over its
    throughput. Not fitted: the link figures are measured or given.
The constants are fitted on public measurements (benchmarks/fit_speed_model.py), judged only on
held-out sources (benchmarks/bench_speed_model.py), and stored with each regime's held-out error
band in phoenix_gui/data/speed-model.json. Prompt processing is a rough estimate.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from ..resources import resource

# A numpy copy counts read + write; decode loops read. Measured copy bandwidth is about this
# fraction of the theoretical figure the model's CPU efficiency is fitted against.
COPY_TO_THEORETICAL = 0.65

DEFAULT_CONSTANTS = {
    # achieved fraction of the spec bandwidth in decode, per architecture (chip size is in gpu_flop)
    "eff": {"Kepler": 0.45, "Maxwell": 0.5, "Pascal": 0.6, "Volta": 0.65, "Turing": 0.65, "Ampere": 0.7,
            "Ada Lovelace": 0.75, "Hopper": 0.65, "Blackwell": 0.75, "unknown": 0.65},
    "gpu_flop": 8.0,  # FP32-equivalent operations per weight read (dequantize + multiply-add)
    # the part of the arithmetic time not hidden behind the memory reads (0: roofline max, 1: sum)
    "gpu_overlap": 0.5,
    # per kernel family (model/ggml_types.kernel_family): arithmetic per weight relative to a 4-5 bit
    # k-quant, on GPUs (MMVQ) and on CPUs (ggml-cpu's vec_dot). Priors from the kernels' instruction counts:
    # Q8_0 is a plain int8 dot product, 2-3 bit k-quants shift and mask more per weight, i-quants look
    # their values up in codebooks; F16 on a GPU is a plain half mat-vec, on a CPU a conversion per weight.
    "gpu_cost": {"f16": 0.5, "q8_0": 0.7, "legacy": 0.9, "k45": 1.0, "q6_k": 1.2, "k23": 2.0, "iq4": 1.1,
                 "iq_low": 2.5},
    "cpu_cost": {"f16": 1.0, "q8_0": 0.8, "legacy": 1.0, "k45": 1.0, "q6_k": 1.2, "k23": 1.5, "iq4": 1.2,
                 "iq_low": 2.5},
    # per-core rate of an instruction set class relative to AVX2; AVX-512 (Zen4/5, Intel server and HEDT)
    # and AVX-VNNI have int8 dot-product instructions (vpdpbusd), NEON-class cores (Apple, Cortex-A) sdot
    # Apple's performance cores issue four 128-bit NEON operations a cycle where a Cortex-A76 issues two
    "cpu_isa": {"AVX2": 1.0, "AVX-VNNI": 1.15, "AVX-512": 1.3, "NEON": 0.7, "NEON-wide": 1.4},
    # i-quants' codebook lookups vectorise well with AVX-512 (vpermb / gathers): cheaper there than the
    # family's cost says (issue 19: IQ1/IQ2 on a modern AVX-512 CPU were predicted several times too slow)
    "cpu_iq_avx512": 0.5,
    # small Pascal chips (GP104/GP106/GP107/GP108: GTX 1050-1080, P4): a prior from the seed's GTX 1050 Ti
    # measured at about 2/3 of what the Pascal efficiency predicts; no public row pins it (few measurements)
    "small_pascal": 0.75,
    # without int8 dot-product instructions (compute capability below 6.1) the quantized
    # dot products are emulated; a prior, the public measurements (data/speed-calibration.jsonl) have no such card
    "no_dp4a_factor": 3.0,
    "eff_cpu": 0.6,  # achieved fraction of the theoretical RAM bandwidth
    "cpu_cap_gbs": 300.0,  # what the cores' memory parallelism saturates at
    "core_gweights": 2.0,  # weights per second (1e9) one core dequantizes and multiplies
    "gpu_layer_ms": 0.04,
    "cpu_layer_ms": 0.1,
    "hop_ms": 0.15,
    "base_ms": {"current": 1.0, "old": 1.5},  # per token, by build era
    "bw_cap_gbs": 10000.0,
    "pp_gpu_mult": 30.0,
    "pp_cpu_mult": 4.0,
}
# A device whose memory speed nobody told (another PC's plain rpc-server, without `phoenix share`'s info):
# a dual-channel DDR4 PC's RAM, the slowest thing it is likely to be; plans say so (planner/plan.py).
UNKNOWN_BANDWIDTH_GBS = 20.0
TFLOPS_PER_GBS = 0.03  # a GPU missing from the spec table: FP32 rate from its bandwidth (median ratio)
MIN_BAND_ROWS = 5  # fewer held-out rows than this say nothing about a regime's spread
# a family or class with fewer rows: its band is the overall one widened by these factors (low, high)
FEW_WIDEN = (0.8, 1.25)
LOWBIT_QUANTS = ("Q2_K", "Q3_K", "IQ1", "IQ2", "IQ3", "TQ")  # file types of the low-bit family
# The quant families and device classes the held-out table reports (benchmarks/bench_speed_model.py) and
# a plan's band comes from.
QUANT_FAMILIES = ("low-bit Q2/Q3/IQ", "K Q4-Q6", "legacy Q4_0/Q8_0", "F16")
DEVICE_CLASSES = ("small Pascal", "other GPU", "CPU")
SMALL_PASCAL_CHIPS = ("GP104", "GP106", "GP107", "GP108")


_OVERRIDE: list[dict] = []


@contextmanager
def constants_in_force(c: dict):
    """Plans made inside use these constants (the benchmarks predict held-out rows through
    make_plan with constants fitted without them)."""
    _OVERRIDE.append(c)
    try:
        yield
    finally:
        _OVERRIDE.pop()


def speed_constants() -> dict:
    return _OVERRIDE[-1] if _OVERRIDE else _shipped()["constants"]


def speed_bands() -> dict:
    """Per regime: measured / predicted at the 10th and 90th percentile of held-out rows, and the
    median |error| (the noise auto-fit compares plans against)."""
    return _shipped()["bands"]


@lru_cache(maxsize=1)
def _shipped() -> dict:
    try:
        data = json.loads(resource("speed-model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    c = json.loads(json.dumps(DEFAULT_CONSTANTS))
    got = data.get("constants", {})
    for k, v in got.items():
        if k in c and isinstance(c[k], dict) and isinstance(v, dict):
            c[k].update(v)
        elif k in c and not isinstance(c[k], dict) and isinstance(v, (int, float)):
            c[k] = float(v)
    return {"constants": c, "bands": data.get("bands", {})}


@dataclass(frozen=True)
class SpeedDevice:
    kind: str  # "gpu" or "cpu"
    architecture: str
    bandwidth_gbs: float  # GPU: spec memory bandwidth; CPU: theoretical RAM bandwidth
    bytes_per_token: float  # active weights + KV cache read per generated token (at the plan's fill)
    layers: float  # offloadable layers it runs
    weight_bytes: float = 0.0  # all weights it holds (prompt processing touches them per batch)
    kv_bytes: float = 0.0  # the KV part of bytes_per_token
    kv_full_bytes: float = 0.0  # KV cache read per token when the whole context is filled
    tflops: float = 0.0  # GPU: FP32 rate; 0 = unknown
    dp4a: bool = True  # GPU: int8 dot products (compute capability 6.1+)
    threads: int = 0  # CPU: threads the engine runs; 0 = unknown (bandwidth only)
    bits_per_weight: float = 4.5  # of the weights it reads: weights per byte = 8 / this
    lowbit: bool = False  # 2-3 bit k-quants or i-quants (costlier to unpack); used only without `mix`
    # weights read per token by kernel family (model/ggml_types.kernel_family), KV cache aside; empty: all
    # of bytes_per_token - kv_bytes at bits_per_weight, as a 4-5 bit k-quant (or k23 with lowbit)
    mix: tuple[tuple[str, float], ...] = ()
    isa: str = "AVX2"  # CPU: instruction set class (cpu_isa)
    small_pascal: bool = False  # GPU: a small Pascal chip (SMALL_PASCAL_CHIPS)


@dataclass(frozen=True)
class SpeedInputs:
    """What a plan's tokens/s depends on; make_plan builds it, the fit varies only the constants."""
    devices: list[SpeedDevice]
    hops: int = 0  # device changes per token
    era: str = "current"  # or "old": the engine build's per-token overhead
    fill: float = 0.25  # fraction of the context that is cached at the plan's prediction point
    regime: str = "single_gpu"
    moe: bool = False
    network_s: float = 0.0  # per token: round trips and activations to and from other PCs (RPC devices)


def cpu_effective_gbs(bandwidth_gbs: float, c: dict) -> float:
    """Achieved RAM read rate of a decode loop: a fraction of the theoretical figure, saturating on
    many-channel systems."""
    bw = bandwidth_gbs * c["eff_cpu"]
    return bw / (1.0 + bw / c["cpu_cap_gbs"])


def _mix(d: SpeedDevice) -> tuple[tuple[str, float], ...]:
    if d.mix:
        return d.mix
    weights = (d.bytes_per_token - d.kv_bytes) * 8.0 / max(0.5, d.bits_per_weight)
    return (("k23" if d.lowbit else "k45", weights),)


def cpu_isa_of(cpu_name: str) -> str:
    """The instruction set class of a CPU by its name (the rate classes of cpu_isa): NEON-wide for Apple's
    cores, NEON for other ARM cores,
    AVX-512 for Zen 4/5 and Intel's AVX-512 lines, AVX-VNNI for Intel's 12th-14th generation and Core
    Ultra client chips, AVX2 otherwise (nearly every x86-64 CPU since 2013)."""
    n = (cpu_name or "").lower()
    if any(k in n for k in ("apple", " m1 ", " m2 ", " m3 ", " m4 ")):
        return "NEON-wide"
    if any(k in n for k in ("raspberry", "cortex", "arm", "snapdragon",
                            "neoverse", "grace", "altra", "graviton", "rockchip")):
        return "NEON"
    if re.search(r"ryzen (ai|\d+ [789]\d{3}|[3579] pro [789]\d{3})|[789]\d{3}x3d|threadripper (pro )?[79]\d{3}|"
                 r"epyc [49]\d{3}|xeon|i[3579]-(10\d{3}x|7\d{3}x|9\d{3}x|11\d{3})|9950x|7950x|7900x|7800x|7700x|7600x", n):
        return "AVX-512"
    if re.search(r"i[3579]-1[234]\d{3}|core ultra|\bn[0-9]{3}\b", n):
        return "AVX-VNNI"
    return "AVX2"


def token_seconds(inp: SpeedInputs | list[SpeedDevice], c: dict | None = None, fill: float | None = None) -> float:
    """Seconds per generated token; `fill` (0..1) replaces the plan's cache fill. A bare list of
    devices is taken as one current-era plan without hops (the per-device view that
    planner/calibration.py scales)."""
    if not isinstance(inp, SpeedInputs):
        inp = SpeedInputs(list(inp))
    c = c or speed_constants()
    base = c["base_ms"]
    t = (base.get(inp.era, base["current"]) if isinstance(base, dict) else base) / 1000
    gcost, ccost = c["gpu_cost"], c["cpu_cost"]
    for d in inp.devices:
        if d.bytes_per_token <= 0 and d.layers <= 0:
            continue
        weights = d.bytes_per_token - d.kv_bytes
        kv = d.kv_bytes if fill is None else d.kv_full_bytes * fill
        mix = _mix(d)
        if d.kind == "cpu":
            mem = (weights + kv) / (cpu_effective_gbs(d.bandwidth_gbs, c) * 1e9)
            arith = 0.0
            if d.threads:
                isa = c["cpu_isa"].get(d.isa, 1.0)
                work = sum(w * ccost.get(f, 1.0) * (c["cpu_iq_avx512"] if f == "iq_low" and d.isa == "AVX-512" else 1.0)
                           for f, w in mix)
                arith = work / (d.threads * c["core_gweights"] * isa * 1e9)
            t += max(mem, arith) + d.layers * c["cpu_layer_ms"] / 1000
        else:
            eff = c["eff"].get(d.architecture, c["eff"]["unknown"]) * (c["small_pascal"] if d.small_pascal else 1.0)
            bw = d.bandwidth_gbs * eff
            bw = bw / (1.0 + bw / c["bw_cap_gbs"])  # very fast (HBM) cards saturate
            flops = (d.tflops or d.bandwidth_gbs * TFLOPS_PER_GBS) * 1e12
            mem = (weights + kv) / (bw * 1e9)
            nd = 1.0 if d.dp4a else c["no_dp4a_factor"]
            work = sum(w * gcost.get(f, 1.0) * (1.0 if f == "f16" else nd) for f, w in mix)
            arith = work * c["gpu_flop"] / flops
            t += max(mem, arith) + c["gpu_overlap"] * min(mem, arith) + d.layers * c["gpu_layer_ms"] / 1000
    return t + inp.hops * c["hop_ms"] / 1000 + inp.network_s


def tokens_per_second(inp: SpeedInputs | list[SpeedDevice], c: dict | None = None, fill: float | None = None) -> float:
    return 1.0 / token_seconds(inp, c, fill)


def gpu_rate(bandwidth_gbs: float, architecture: str, tflops: float = 0.0, dp4a: bool = True) -> float:
    """Bytes of 4.5-bit weights per second a GPU gets through in decode (ranks cards for auto-fit)."""
    d = (SpeedDevice("gpu", architecture, bandwidth_gbs, 1e9, 0, tflops=tflops, dp4a=dp4a) if bandwidth_gbs > 0
         else SpeedDevice("cpu", "cpu", UNKNOWN_BANDWIDTH_GBS, 1e9, 0))  # as make_plan reads an unknown device
    c = speed_constants()
    return 1e9 / (token_seconds([d], c) - token_seconds([], c))


def quant_family(file_type: str) -> str:
    """The quant family of a model file type (QUANT_FAMILIES), for the held-out table and the bands."""
    q = (file_type or "").upper().removeprefix("UD-").removeprefix("MOSTLY_")
    if q.startswith(LOWBIT_QUANTS):
        return QUANT_FAMILIES[0]
    if q.startswith(("Q4_K", "Q5_K", "Q6_K", "IQ4")):
        return QUANT_FAMILIES[1]
    if q.startswith(("F16", "BF16", "F32", "ALL_F32")):
        return QUANT_FAMILIES[3]
    return QUANT_FAMILIES[2]  # Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, MXFP4


def device_class(inp: SpeedInputs) -> str:
    """The device class of a plan (DEVICE_CLASSES): CPU when no GPU reads weights, small Pascal when one
    of the GPUs it uses is a small Pascal chip, other GPU otherwise."""
    gpus = [d for d in inp.devices if d.kind == "gpu" and d.bytes_per_token > 0]
    if not gpus:
        return DEVICE_CLASSES[2]
    return DEVICE_CLASSES[0] if any(d.small_pascal for d in gpus) else DEVICE_CLASSES[1]


def speed_band(tps: float, regime: str, moe: bool = False, family: str | None = None,
               dclass: str | None = None) -> tuple[float, float]:
    """The likely range of the measured speed: the regime's held-out 10th..90th percentile of
    measured / predicted; an MoE model takes the wider of its regime's and the MoE band, and the plan's
    quant family and device class widen it to theirs. A family or class with fewer than MIN_BAND_ROWS
    held-out rows widens it further (band_note says "few measurements")."""
    lo, hi = _band(regime).get("band", (1.0, 1.0))
    if moe:
        mlo, mhi = _band("moe").get("band", (lo, hi))
        lo, hi = min(lo, mlo), max(hi, mhi)
    bands = speed_bands()
    for key in (family, dclass):
        if not key:
            continue
        g = bands.get(key, {})
        if g.get("n", 0) >= MIN_BAND_ROWS:
            glo, ghi = g["band"]
            lo, hi = min(lo, glo), max(hi, ghi)
        else:
            alo, ahi = bands.get("all", {}).get("band", (lo, hi))
            lo, hi = min(lo, alo) * FEW_WIDEN[0], max(hi, ahi) * FEW_WIDEN[1]
    # a band that leaves out the prediction itself reads as a contradiction; widen it to include it
    return tps * min(lo, 1.0), tps * max(hi, 1.0)


def band_note(family: str | None, dclass: str | None) -> str:
    """"few measurements (...)" when the plan's quant family or device class has fewer than
    MIN_BAND_ROWS held-out rows, else ""."""
    bands = speed_bands()
    few = [f"{k}: {bands.get(k, {}).get('n', 0)} rows" for k in (family, dclass)
           if k and bands.get(k, {}).get("n", 0) < MIN_BAND_ROWS]
    return f"few measurements ({'; '.join(few)})" if few else ""


def _band(regime: str) -> dict:
    """The regime's held-out figures, or those of all rows where too few rows show the regime."""
    bands = speed_bands()
    got = bands.get(regime)
    return got if got and got.get("n", 0) >= MIN_BAND_ROWS else bands.get("all", {})


def noise(regime: str) -> float:
    """Typical held-out |error| of a regime: a smaller advantage between two plans is noise."""
    return float(_band(regime).get("median", 0.1))


def default_threads(rule: str, logical_cores: int, physical_cores: int, cpu_name: str = "") -> int:
    """Threads an engine uses when none are given, by its profile's rule (EngineProfile
    default_threads, when engines.py carries it):
    "half_minus_one" - koboldcpp's get_default_threads: half the logical CPUs, minus one above 3
                       (at least 3), at most 8 on Intel CPUs (to avoid E-cores), at most 64;
    "physical"       - llama.cpp's default: the physical cores."""
    if rule == "half_minus_one":
        half = max(1, logical_cores // 2)
        n = half if half <= 3 else max(3, half - 1)
        if "intel" in cpu_name.lower():
            n = min(n, 8)
        return min(n, 64)
    return max(1, physical_cores)


def prompt_tokens_per_second(devices: list[SpeedDevice], n_ubatch: int = 512, c: dict | None = None) -> float:
    """Rough: a batch of n_ubatch tokens is compute-bound on GPUs, bandwidth-bound-ish on CPUs."""
    c = c or speed_constants()
    t = 0.0
    for d in devices:
        if d.layers <= 0 and d.bytes_per_token <= 0:
            continue
        if d.kind == "cpu":
            # weights in RAM are either crunched by the CPU or copied to the first GPU per batch
            t += d.weight_bytes / (d.bandwidth_gbs * 1e9 * c["pp_cpu_mult"]) / max(1, n_ubatch / 64)
        else:
            eff = c["eff"].get(d.architecture, c["eff"]["unknown"])
            t += d.weight_bytes / (d.bandwidth_gbs * 1e9 * eff * c["pp_gpu_mult"])
    return 1.0 / t if t > 0 else 0.0


def cpu_theoretical_bandwidth(gbs: float, source: str) -> float:
    return gbs / COPY_TO_THEORETICAL if source == "measured" else gbs
