"""Tokens/s model: a token reads every active weight and the KV cache once, device after device.

time per token = sum over devices of bytes read / (bandwidth x efficiency of its architecture)
               + a fixed cost per offloaded layer + a fixed cost per hop between devices.
The constants are fitted on public measurements (benchmarks/fit_speed_model.py) and stored in
phoenix_gui/data/speed-model.json. Prompt processing is a rough estimate with the same shape.
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
    "eff": {"Maxwell": 0.45, "Pascal": 0.55, "Volta": 0.6, "Turing": 0.62, "Ampere": 0.68,
            "Ada Lovelace": 0.72, "Hopper": 0.6, "Blackwell": 0.7, "unknown": 0.55},
    "eff_cpu": 0.55,
    "gpu_layer_ms": 0.04,
    "cpu_layer_ms": 0.1,
    "hop_ms": 0.3,
    "base_ms": 1.0,
    "bw_cap_gbs": 3000.0,
    "cpu_cap_gbs": 200.0,
    "lowbit_factor": 1.0,
    "pp_gpu_mult": 30.0,
    "pp_cpu_mult": 4.0,
}

# Low-bit k-quants and i-quants spend more time dequantising per byte read.
LOWBIT_QUANTS = ("Q2_K", "Q3_K", "IQ1", "IQ2", "IQ3", "TQ")


def quant_factor(file_type: str, c: dict) -> float:
    ft = (file_type or "").upper()
    return c["lowbit_factor"] if ft.startswith(LOWBIT_QUANTS) else 1.0


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
    return _OVERRIDE[-1] if _OVERRIDE else _shipped_constants()


@lru_cache(maxsize=1)
def _shipped_constants() -> dict:
    try:
        data = json.loads(resource("speed-model.json").read_text(encoding="utf-8"))
        c = dict(DEFAULT_CONSTANTS)
        c.update({k: v for k, v in data.get("constants", {}).items() if k in DEFAULT_CONSTANTS})
        c["eff"] = {**DEFAULT_CONSTANTS["eff"], **data.get("constants", {}).get("eff", {})}
        return c
    except (OSError, ValueError, FileNotFoundError):
        return dict(DEFAULT_CONSTANTS)


@dataclass(frozen=True)
class SpeedDevice:
    kind: str  # "gpu" or "cpu"
    architecture: str
    bandwidth_gbs: float  # GPU: spec memory bandwidth; CPU: theoretical RAM bandwidth
    bytes_per_token: float  # active weights + KV read per generated token
    layers: float  # offloadable layers it runs
    weight_bytes: float = 0.0  # all weights it holds (prompt processing touches them per batch)


def gpu_effective_gbs(bandwidth_gbs: float, architecture: str, c: dict) -> float:
    """Achieved decode bandwidth: a fraction of the spec, saturating on very fast (HBM) cards."""
    bw = bandwidth_gbs * c["eff"].get(architecture, c["eff"]["unknown"])
    return bw / (1.0 + bw / c["bw_cap_gbs"])


def cpu_effective_gbs(bandwidth_gbs: float, c: dict) -> float:
    """Achieved RAM read rate of a decode loop: a fraction of the theoretical figure, saturating on
    many-channel systems, where the cores' memory parallelism and compute become the limit."""
    bw = bandwidth_gbs * c["eff_cpu"]
    return bw / (1.0 + bw / c["cpu_cap_gbs"])


def token_seconds(devices: list[SpeedDevice], c: dict | None = None, file_type: str = "") -> float:
    c = c or speed_constants()
    q = quant_factor(file_type, c)
    active = [d for d in devices if d.bytes_per_token > 0 or d.layers > 0]
    t = c["base_ms"] / 1000
    for d in active:
        if d.kind == "cpu":
            t += q * d.bytes_per_token / (cpu_effective_gbs(d.bandwidth_gbs, c) * 1e9) + d.layers * c["cpu_layer_ms"] / 1000
        else:
            bw = gpu_effective_gbs(d.bandwidth_gbs, d.architecture, c)
            t += q * d.bytes_per_token / (bw * 1e9) + d.layers * c["gpu_layer_ms"] / 1000
    t += max(0, len(active) - 1) * c["hop_ms"] / 1000
    return t


def tokens_per_second(devices: list[SpeedDevice], c: dict | None = None, file_type: str = "") -> float:
    return 1.0 / token_seconds(devices, c, file_type)


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
