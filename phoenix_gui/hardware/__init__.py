"""Detecting the rig: NVIDIA GPUs through NVML, RAM and CPU through psutil, or a simulated rig."""

from __future__ import annotations

import platform

from .nvml import detect_gpus
from .rig import GIB, MIB, GpuInfo, Rig, SystemInfo
from .rigfile import RigFileError, demo_rig_path, list_rigs, load_rig
from .system import detect_system


def detect_rig(nvml=None, measure_bandwidth: bool = True) -> Rig:
    gpus, note = detect_gpus(nvml)
    return Rig(name=platform.node() or "This PC", gpus=gpus, system=detect_system(measure_bandwidth),
               gpu_note=note, os="windows" if platform.system() == "Windows" else "linux")


__all__ = ["GIB", "MIB", "GpuInfo", "Rig", "SystemInfo", "RigFileError", "demo_rig_path", "detect_gpus",
           "detect_rig", "detect_system", "list_rigs", "load_rig"]
