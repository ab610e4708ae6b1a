"""What the user chose: context, cache, batch, offload and split. Plain, hashable, Qt-free."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .. import validate as v
from ..validate import BACKENDS, CACHE_TYPES, DEFAULT_CONTEXT, OBJECTIVES  # noqa: F401 - the planner's names for them
from ..engines import CURRENT, EngineProfile, profile_named
from .budgets import Budgets




def default_context(n_ctx_train: int | None) -> int:
    """The one default context: 4096, or the model's trained context when that is smaller (a model trained on 2048
    tokens is not asked for 4096), in whole 256-token steps."""
    if not n_ctx_train:
        return DEFAULT_CONTEXT
    return max(256, min(DEFAULT_CONTEXT, n_ctx_train // 256 * 256))


@dataclass(frozen=True)
class PlanSettings:
    context: int = DEFAULT_CONTEXT
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: bool = True
    batch: int = 512  # physical batch (n_ubatch); koboldcpp's --batchsize
    gpulayers: int | None = None  # None = every layer incl. the output layer
    tensor_split: tuple[float, ...] | None = None  # None = by free memory, as llama.cpp does
    moecpu: int = 0  # experts of the first N blocks stay in RAM (--moecpu / --n-cpu-moe)
    split_mode: str = "layer"  # "layer" or "row" (row is approximate)
    backend: str = "koboldcpp"
    # the engine build's rules (phoenix_gui/engines): a profile or its name; None = the backend's
    # current profile. `phoenix plan --era old` picks the backend's pre-Dec-2025 profile.
    engine: str | EngineProfile | None = None
    use_mmap: bool | None = None  # None = the engine's default (koboldcpp off, llama-server on)
    lowvram: bool = False  # KV cache in system RAM (-nkvo / --lowvram)
    devices: tuple[int, ...] | None = None  # indices into rig.gpus, in the order the engine gets them
    cuda_overhead_mib: float | None = None  # CUDA context + cuBLAS + pools; None = by OS
    display_reserve_mib: float | None = None  # kept free on a GPU that drives a display; None: 256 Linux, 512 Windows
    margin_mib: float = 256.0  # safety margin per GPU (on top of the CUDA context overhead)
    ram_margin_mib: float = 1024.0
    kv_fill: int | None = None  # cached tokens assumed for speed; None = a quarter of the context
    host: str = "127.0.0.1"
    port: int = 5001
    threads: int | None = None
    # parallel slots: llama-server -np N (with --kv-unified), koboldcpp --parallelrequests N. The slots
    # share one cache of `context` cells; the sliding-window cache and the logits buffer grow with N
    parallel: int = 1
    # tensor overrides (-ot REGEX=BUFT, koboldcpp --overridetensors), in order, first match wins: pairs of
    # (regex, "CPU" or "CUDA<n>", the n-th GPU of the plan); applied after the layer rule, before --moecpu's
    overrides: tuple[tuple[str, str], ...] = ()
    # engine options Phoenix does not plan, kept from the user's config (validate.ENGINE_OPTIONS): sorted (name,
    # value) pairs, carried to the command lines and exports as the user set them
    engine_options: tuple = ()
    # what out-of-memory failures taught about each GPU (planner/recovery.py): kept from one retry to the next,
    # not part of the plan's identity
    budgets: Budgets = field(default_factory=Budgets, compare=False, hash=False)

    def __post_init__(self):
        # a profile of another engine would plan for one program and launch another
        if self.engine is not None and profile_named(self.engine).backend != self.backend:
            raise ValueError(f"Engine {profile_named(self.engine).name} is not a {self.backend} build.")

    def with_(self, **kw) -> "PlanSettings":
        return replace(self, **kw)

    @property
    def profile(self) -> EngineProfile:
        if self.engine is None:
            return CURRENT.get(self.backend) or profile_named(self.backend)
        return profile_named(self.engine)

    @property
    def mmap(self) -> bool:
        return self.use_mmap if self.use_mmap is not None else self.profile.mmap_default

    def kv_types(self) -> tuple[str, str]:
        """Effective K/V cache types: quantized V needs flash attention."""
        v = self.cache_type_v
        if not self.flash_attn and v not in ("f16", "bf16", "f32"):
            v = "f16"
        return self.cache_type_k, v


def check_settings(s: PlanSettings, n_gpus: int) -> None:
    """The planner's last line of defence: nonsense that arrives from Python (a repeated device, a
    NaN split, a negative batch) raises InputError here instead of becoming a plan. The boundaries
    (CLI, wizard, files) check the same rules earlier, with their own wording."""
    v.context(s.context, "llama-server")  # the widest engine limit; koboldcpp's is checked where it is chosen
    v.choice(s.cache_type_k, "KV cache type", CACHE_TYPES)
    v.choice(s.cache_type_v, "KV cache type", CACHE_TYPES)
    v.batch(s.batch)
    v.gpulayers(s.gpulayers)
    v.moecpu(s.moecpu)
    v.choice(s.split_mode, "split mode", ("layer", "row"))
    v.choice(s.backend, "backend", BACKENDS)
    if s.devices is not None:
        v.devices(s.devices, n_gpus)
    n_dev = n_gpus if s.devices is None else len(s.devices)
    if s.tensor_split is not None:
        vals = [v.number(x, "Each split weight", 0) for x in s.tensor_split]
        if len(vals) > max(n_dev, 1) or len(vals) > v.MAX_DEVICES:
            raise v.InputError(f"{len(vals)} split values for {n_dev} GPU(s): give at most one per GPU.")
    for name in ("cuda_overhead_mib", "display_reserve_mib"):
        if getattr(s, name) is not None:
            v.mib(getattr(s, name), name)
    v.mib(s.margin_mib, "margin_mib")
    v.mib(s.ram_margin_mib, "ram_margin_mib", 1 << 24)
    if s.kv_fill is not None:
        v.integer(s.kv_fill, "kv_fill", 0, v.INT32_MAX)
    if s.threads is not None:
        v.integer(s.threads, "threads", 1, 4096)
    v.integer(s.parallel, "parallel slots", 1, 32)  # koboldcpp's --parallelrequests range
    v.engine_options(s.engine_options)
    check_overrides(s.overrides, n_dev)
    v.host(s.host)
    v.port(s.port)


def check_overrides(overrides, n_gpus: int) -> None:
    """Each override is a (regex, buffer type) pair whose regex compiles and whose device exists."""
    from .placement import CPU, override_device

    if not isinstance(overrides, tuple):
        raise v.InputError(f"Tensor overrides must be a tuple of (pattern, device) pairs, not {overrides!r}.")
    for pair in overrides:
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise v.InputError(f"A tensor override must be a (pattern, device) pair, not {pair!r}.")
        rx, buft = pair
        try:
            re.compile(rx)
        except re.error as e:
            raise v.InputError(f"The tensor override pattern {rx!r} is not a valid regular expression ({e}).") from None
        d = override_device(buft)
        if d is None or (d != CPU and d >= max(n_gpus, 0)):
            raise v.InputError(f"The tensor override device {buft!r} is not CPU or one of the plan's "
                               f"{n_gpus} GPU(s) (CUDA0 ... CUDA{max(n_gpus - 1, 0)}).")
