"""A stand-in for the NVML library (no NVIDIA GPU can exist here).

It keeps pynvml's Python interface: the same function names and signatures, the same ctypes
result structures and the same NVMLError subclasses and codes, so detection code cannot tell
it from the real module. Only the driver underneath is simulated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pynvml
from pynvml import NVMLError


@dataclass
class FakeGpu:
    name: str
    total_mib: int
    used_mib: int = 0
    bus_id: str = "00000000:01:00.0"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    cc: tuple[int, int] = (7, 5)
    bus_width: int = 256
    mem_clock_mhz: int = 7000
    pcie_gen: int = 3
    pcie_width: int = 16
    display: bool = False
    lost: bool = False  # raises NVML_ERROR_GPU_IS_LOST, as a card that fell off the bus does
    no_v2: bool = False  # driver without nvmlDeviceGetMemoryInfo_v2
    util: int = 0
    temp_c: int = 45
    power_mw: int | None = 75000


@dataclass
class FakeNVML:
    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: int | None = None  # e.g. pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    driver: str = "550.144.03"
    cuda: int = 12040
    initialized: int = 0

    # constants the code under test reads from the module
    NVML_ERROR_LIBRARY_NOT_FOUND = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    NVML_ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    nvmlMemory_v2 = pynvml.nvmlMemory_v2
    NVMLError = NVMLError

    def _check(self):
        if not self.initialized:
            raise NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle) -> FakeGpu:
        self._check()
        g = self.gpus[handle]
        if g.lost:
            raise NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return g

    def nvmlInit(self):
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self):
        self._check()
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self):
        self._check()
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self):
        self._check()
        return self.cuda

    def nvmlSystemGetCudaDriverVersion_v2(self):
        self._check()
        return self.cuda

    def nvmlDeviceGetCount(self):
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._check()
        if not 0 <= index < len(self.gpus):
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].lost:
            raise NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return index

    def nvmlDeviceGetName(self, h):
        return self._gpu(h).name

    def nvmlDeviceGetUUID(self, h):
        return self._gpu(h).uuid

    def nvmlDeviceGetPciInfo(self, h):
        g = self._gpu(h)
        info = pynvml.nvmlPciInfo_t()
        info.busId = g.bus_id.encode()
        info.busIdLegacy = g.bus_id[-12:].encode()
        return info

    def nvmlDeviceGetMemoryInfo(self, h, version=None):
        g = self._gpu(h)
        mib = 1 << 20
        if version:
            if g.no_v2:
                raise NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
            m = pynvml.c_nvmlMemory_v2_t()
            m.version = version
            m.reserved = 0
        else:
            m = pynvml.c_nvmlMemory_t()
        m.total = g.total_mib * mib
        m.used = g.used_mib * mib
        m.free = (g.total_mib - g.used_mib) * mib
        return m

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return self._gpu(h).cc

    def nvmlDeviceGetMemoryBusWidth(self, h):
        return self._gpu(h).bus_width

    def nvmlDeviceGetMaxClockInfo(self, h, clock_type):
        g = self._gpu(h)
        if clock_type != pynvml.NVML_CLOCK_MEM:
            return 1500
        return g.mem_clock_mhz

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return self._gpu(h).pcie_gen

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return self._gpu(h).pcie_width

    def nvmlDeviceGetDisplayActive(self, h):
        return int(self._gpu(h).display)

    def nvmlDeviceGetDisplayMode(self, h):
        return int(self._gpu(h).display)

    def nvmlDeviceGetUtilizationRates(self, h):
        g = self._gpu(h)
        u = pynvml.c_nvmlUtilization_t()
        u.gpu, u.memory = g.util, g.util // 2
        return u

    def nvmlDeviceGetTemperature(self, h, sensor):
        g = self._gpu(h)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return g.temp_c

    def nvmlDeviceGetPowerUsage(self, h):
        g = self._gpu(h)
        if g.power_mw is None:
            raise NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)  # common on GeForce cards of this age
        return g.power_mw
