"""Samplers (NVML, process memory, throughput) as plain Python producing time series."""

from .recorder import Monitor, Series
from .ring import RingBuffer
from .samplers import NvmlSampler, ProcessSampler, ThroughputSampler

__all__ = ["Monitor", "NvmlSampler", "ProcessSampler", "RingBuffer", "Series", "ThroughputSampler"]
