"""The GPU spec table (phoenix_gui/data/gpu-specs.csv): bandwidth and architecture where NVML can't tell."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache

from ..resources import resource


@dataclass(frozen=True)
class GpuSpec:
    name: str
    architecture: str
    compute_capability: str
    vram_gib: float
    bus_bits: int
    bandwidth_gbs: float
    pcie_gen: str
    chip: str = ""
    fp32_tflops: float = 0.0  # the chip's size for the speed model: SMs x clock


def _num(s: str, cast=float, default=0):
    try:
        return cast(s)
    except (TypeError, ValueError):
        return default


@lru_cache(maxsize=1)
def gpu_specs() -> tuple[GpuSpec, ...]:
    out = []
    with open(resource("gpu-specs.csv"), newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            bw = _num(row.get("memory_bandwidth_gbs"))
            if not bw:
                continue
            out.append(GpuSpec(row["name"], row["architecture"], row["compute_capability"],
                               _num(row["vram_gib"]), _num(row["memory_bus_bits"], int), bw, row.get("pcie_gen", ""),
                               row.get("chip", ""), _num(row.get("fp32_tflops"))))
    return tuple(out)


def _norm(name: str) -> str:
    name = re.sub(r"\(.*?\)", " ", name).lower().replace("nvidia", "").replace("geforce", "").replace("tesla", "")
    return re.sub(r"[^a-z0-9]+", " ", name).strip()


@lru_cache(maxsize=256)
def find_spec(name: str, vram_gib: float | None = None) -> GpuSpec | None:
    """Best spec-table match for an NVML/marketing name, using VRAM to pick between variants.
    Cached: the planner asks for every GPU of every plan."""
    want = _norm(name)
    if not want:
        return None
    best, best_score = None, 0.0
    wtoks = set(want.split())
    for s in gpu_specs():
        stoks = set(_norm(s.name).split())
        core = {t for t in stoks if not re.fullmatch(r"\d+gb", t)}
        if not core <= wtoks | {t for t in stoks if re.fullmatch(r"\d+gb", t)}:
            continue
        score = len(core) + (0.5 if _norm(s.name) == want else 0.0)
        if vram_gib is not None and s.vram_gib:
            score -= min(abs(s.vram_gib - vram_gib), 8) / 16
        # "RTX 3080" must not match the "RTX 3080 Ti" row: every extra word of the row is a penalty
        extra = stoks - wtoks - {t for t in stoks if re.fullmatch(r"\d+gb", t)}
        score -= len(extra)
        if score > best_score:
            best, best_score = s, score
    return best


_ARCH_BY_CC = [((12, 0), "Blackwell"), ((10, 0), "Blackwell"), ((9, 0), "Hopper"), ((8, 9), "Ada Lovelace"),
               ((8, 0), "Ampere"), ((7, 5), "Turing"), ((7, 0), "Volta"), ((6, 0), "Pascal"), ((5, 0), "Maxwell"),
               ((3, 0), "Kepler")]


def architecture_for(cc: tuple[int, int]) -> str:
    for min_cc, name in _ARCH_BY_CC:
        if cc >= min_cc:
            return name
    return "unknown"
