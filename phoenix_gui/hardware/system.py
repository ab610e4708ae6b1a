"""RAM, CPU cores and RAM bandwidth of this machine."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import psutil

from ..storage import cache_dir, write_atomic
from .rig import SystemInfo

# Sustained read bandwidth a decode loop gets, by memory generation and channel count, when
# measuring is not possible (GB/s, roughly 70% of theoretical dual-channel figures).
FALLBACK_BANDWIDTH_GBS = 30.0


def _cache_file() -> Path:
    return cache_dir() / "ram-bandwidth.json"


def measure_ram_bandwidth(budget_s: float = 0.25) -> float:
    """Copy a buffer far larger than any CPU cache for at most budget_s; GB/s read+write."""
    import numpy as np

    n = 64 << 20
    src = np.ones(n // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < budget_s:
        t = time.perf_counter()
        np.copyto(dst, src)
        dt = time.perf_counter() - t
        best = max(best, 2 * n / dt / 1e9)  # a copy reads and writes every byte
    return round(best, 1)


def ram_bandwidth(use_cache: bool = True) -> tuple[float, str]:
    """Measured once per machine and cached; falls back to a typical figure."""
    key = f"{platform.node()}|{psutil.virtual_memory().total}|{os.cpu_count()}"
    path = _cache_file()
    if use_cache:
        try:
            d = json.loads(path.read_text())
            if d.get("key") == key and d.get("gbs", 0) > 0:
                return float(d["gbs"]), "measured"
        except (OSError, ValueError, AttributeError):
            pass
    try:
        gbs = measure_ram_bandwidth()
    except Exception:  # noqa: BLE001 - a measurement must never stop detection
        return FALLBACK_BANDWIDTH_GBS, "table"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"key": key, "gbs": gbs}).encode("utf-8"))
    except OSError:
        pass
    return gbs, "measured"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect_system(measure: bool = True) -> SystemInfo:
    vm = psutil.virtual_memory()
    bw, src = ram_bandwidth() if measure else (FALLBACK_BANDWIDTH_GBS, "table")
    return SystemInfo(
        ram_total_bytes=int(vm.total), ram_available_bytes=int(vm.available),
        physical_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        logical_cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_bandwidth_gbs=bw, ram_bandwidth_source=src, cpu_name=_cpu_name(),
    )
