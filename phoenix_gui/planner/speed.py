"""Tokens/s model: a generated token reads every active weight and the filled KV cache once,
device after device, and each device also has to do the arithmetic on what it reads.

time per token = engine overhead of the build era
  + per GPU: bytes read / (spec bandwidth x efficiency of its architecture)
             + weights read x arithmetic per weight / the chip's FP32 rate (SMs x clock), partly
               hidden behind the reads; x no_dp4a_factor on chips without int8 dot products
               (Kepler/Maxwell Teslas, GP100). The data fits this term small: chip size matters
               less than the architecture once per-layer costs are counted.
             + a fixed cost per layer (kernel launches)
  + CPU:     max(bytes read / achieved RAM bandwidth, weights read / (threads x per-core rate))
             + a fixed cost per layer
  + a fixed cost per hop: every time the token's activations move between devices (layer
    boundaries, the output layer on another device, a KV cache or experts kept in RAM).
  + the network (devices other PCs share over RPC; planner/plan.py network_seconds): per run of
    layers on another PC, the link's round trip plus the activations there and back over its
    throughput. Not fitted: the link figures are measured or given.
The constants are fitted on public measurements (benchmarks/fit_speed_model.py), judged only on
held-out sources (benchmarks/bench_speed_model.py), and stored with each regime's held-out error
band in phoenix_gui/data/speed-model.json. Prompt processing is a rough estimate.
"""

from __future__ import annotations

import json
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
    # 2- and 3-bit k-quants and i-quants unpack their weights with more instructions per weight
    "lowbit_ops": 2.0,
    # without int8 dot-product instructions (compute capability below 6.1) the quantized
    # dot products are emulated; a prior, the calibration data has no such card
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
LOWBIT_QUANTS = ("Q2_K", "Q3_K", "IQ1", "IQ2", "IQ3", "TQ")  # file types whose weights cost lowbit_ops


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
    lowbit: bool = False  # 2-3 bit k-quants or i-quants (costlier to unpack)


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


def token_seconds(inp: SpeedInputs | list[SpeedDevice], c: dict | None = None, fill: float | None = None) -> float:
    """Seconds per generated token; `fill` (0..1) replaces the plan's cache fill. A bare list of
    devices is taken as one current-era plan without hops (the per-device view that
    planner/calibration.py scales)."""
    if not isinstance(inp, SpeedInputs):
        inp = SpeedInputs(list(inp))
    c = c or speed_constants()
    base = c["base_ms"]
    t = (base.get(inp.era, base["current"]) if isinstance(base, dict) else base) / 1000
    for d in inp.devices:
        if d.bytes_per_token <= 0 and d.layers <= 0:
            continue
        weights = d.bytes_per_token - d.kv_bytes
        kv = d.kv_bytes if fill is None else d.kv_full_bytes * fill
        ops = 8.0 / max(0.5, d.bits_per_weight) * (c["lowbit_ops"] if d.lowbit else 1.0)  # per byte
        if d.kind == "cpu":
            mem = (weights + kv) / (cpu_effective_gbs(d.bandwidth_gbs, c) * 1e9)
            arith = weights * ops / (d.threads * c["core_gweights"] * 1e9) if d.threads else 0.0
            t += max(mem, arith) + d.layers * c["cpu_layer_ms"] / 1000
        else:
            bw = d.bandwidth_gbs * c["eff"].get(d.architecture, c["eff"]["unknown"])
            bw = bw / (1.0 + bw / c["bw_cap_gbs"])  # very fast (HBM) cards saturate
            flops = (d.tflops or d.bandwidth_gbs * TFLOPS_PER_GBS) * 1e12
            mem = (weights + kv) / (bw * 1e9)
            arith = weights * ops * c["gpu_flop"] * (1.0 if d.dp4a else c["no_dp4a_factor"]) / flops
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


def speed_band(tps: float, regime: str, moe: bool = False) -> tuple[float, float]:
    """The likely range of the measured speed: the regime's held-out 10th..90th percentile of
    measured / predicted; an MoE model takes the wider of its regime's and the MoE band."""
    lo, hi = _band(regime).get("band", (1.0, 1.0))
    if moe:
        mlo, mhi = _band("moe").get("band", (lo, hi))
        lo, hi = min(lo, mlo), max(hi, mhi)
    # a band that leaves out the prediction itself reads as a contradiction; widen it to include it
    return tps * min(lo, 1.0), tps * max(hi, 1.0)


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
