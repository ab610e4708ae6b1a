"""GPU detection through NVML (the nvidia-ml-py package, module `pynvml`)."""

from __future__ import annotations

from .rig import GpuInfo
from .specs import architecture_for, find_spec


def _s(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _try(fn, *args, default=None):
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - any NVML call may be unsupported on old cards or drivers
        return default


def _nvml_module():
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def detect_gpus(nvml=None) -> tuple[list[GpuInfo], str]:
    """Every NVIDIA GPU in PCI bus order, and a sentence explaining why there are none.

    Never raises: a missing driver, library or a failing call ends in ([], reason).
    """
    nvml = nvml or _nvml_module()
    if nvml is None:
        return [], "The NVIDIA management library (nvidia-ml-py) is not installed."
    try:
        nvml.nvmlInit()
    except Exception as e:  # noqa: BLE001
        return [], _init_reason(nvml, e)
    try:
        return _read_all(nvml)
    except Exception as e:  # noqa: BLE001 - a GPU that vanishes mid-query
        return [], f"Reading the NVIDIA GPUs failed ({_s(e) or type(e).__name__})."
    finally:
        _try(nvml.nvmlShutdown)


def _init_reason(nvml, e: Exception) -> str:
    code = getattr(e, "value", None)
    if code == getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", -1):
        return "No NVIDIA driver was found (the NVML library is missing), so Phoenix plans for the CPU only."
    if code == getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", -1):
        return "The NVIDIA driver is installed but not loaded, so Phoenix plans for the CPU only."
    if code == getattr(nvml, "NVML_ERROR_NO_PERMISSION", -1):
        return "Phoenix has no permission to query the NVIDIA driver."
    return f"The NVIDIA driver could not be queried ({_s(e) or type(e).__name__})."


def _read_all(nvml) -> tuple[list[GpuInfo], str]:
    count = nvml.nvmlDeviceGetCount()
    driver = _s(_try(nvml.nvmlSystemGetDriverVersion, default=""))
    cuda = _try(nvml.nvmlSystemGetCudaDriverVersion_v2, default=None) or _try(nvml.nvmlSystemGetCudaDriverVersion, default=0)
    cuda_s = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else ""
    gpus: list[GpuInfo] = []
    skipped = []
    for i in range(count):
        try:
            gpus.append(_read_one(nvml, i, driver, cuda_s))
        except Exception as e:  # noqa: BLE001 - skip a card that fell off the bus, keep the others
            skipped.append(f"GPU {i} could not be read ({_s(e) or type(e).__name__})")
    gpus.sort(key=lambda g: g.pci_bus_id.lower())
    note = "; ".join(skipped)
    if not gpus and not note:
        note = "The NVIDIA driver reports no GPUs."
    return gpus, note


def _memory(nvml, h) -> tuple[int, int, int]:
    # v2 reports "reserved" memory separately, so used + free matches what allocations can get.
    if hasattr(nvml, "nvmlDeviceGetMemoryInfo") and hasattr(nvml, "nvmlMemory_v2"):
        m = _try(nvml.nvmlDeviceGetMemoryInfo, h, nvml.nvmlMemory_v2)
        if m is not None:
            return int(m.total), int(m.free), int(m.total - m.free)
    m = nvml.nvmlDeviceGetMemoryInfo(h)
    return int(m.total), int(m.free), int(m.used)


def _read_one(nvml, i: int, driver: str, cuda: str) -> GpuInfo:
    h = nvml.nvmlDeviceGetHandleByIndex(i)
    name = _s(nvml.nvmlDeviceGetName(h))
    uuid = _s(_try(nvml.nvmlDeviceGetUUID, h, default=""))
    pci = _try(nvml.nvmlDeviceGetPciInfo, h)
    bus_id = _s(getattr(pci, "busId", b"") or getattr(pci, "busIdLegacy", b"")) if pci else f"{i:08x}"
    total, free, used = _memory(nvml, h)
    cc = _try(nvml.nvmlDeviceGetCudaComputeCapability, h, default=(0, 0)) or (0, 0)
    bus_bits = int(_try(nvml.nvmlDeviceGetMemoryBusWidth, h, default=0) or 0)
    mem_clock = int(_try(nvml.nvmlDeviceGetMaxClockInfo, h, getattr(nvml, "NVML_CLOCK_MEM", 2), default=0) or 0)
    spec = find_spec(name, total / (1 << 30))
    if spec:
        bw, src = spec.bandwidth_gbs, "spec table"
    elif bus_bits and mem_clock:
        bw, src = bus_bits / 8 * mem_clock * 2 / 1000, "nvml"  # double data rate
    else:
        bw, src = 100.0, "guess"
    arch = architecture_for(tuple(cc)) if cc != (0, 0) else (spec.architecture if spec else "unknown")
    display = _try(nvml.nvmlDeviceGetDisplayActive, h, default=None)
    if display is None:
        display = _try(nvml.nvmlDeviceGetDisplayMode, h, default=0)
    return GpuInfo(
        index=i, name=name, uuid=uuid, pci_bus_id=bus_id, total_bytes=total, free_bytes=free, used_bytes=used,
        compute_capability=(int(cc[0]), int(cc[1])), architecture=arch, bandwidth_gbs=round(bw, 1),
        bandwidth_source=src, bus_width_bits=bus_bits, mem_clock_mhz=mem_clock,
        pcie_gen=int(_try(nvml.nvmlDeviceGetMaxPcieLinkGeneration, h, default=0) or 0),
        pcie_width=int(_try(nvml.nvmlDeviceGetMaxPcieLinkWidth, h, default=0) or 0),
        display_attached=bool(display), driver_version=driver, cuda_driver_version=cuda,
    )
