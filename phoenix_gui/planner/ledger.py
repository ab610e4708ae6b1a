"""Plain results of a plan: one DevicePlan per GPU and one for the CPU side."""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass, field

MIB = 1 << 20


@dataclass
class DevicePlan:
    name: str
    kind: str  # "gpu" or "cpu"
    gpu_index: int | None  # index into rig.gpus
    layers: int  # repeating blocks + the output layer if it is here
    first_layer: int | None
    last_layer: int | None
    has_output: bool
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    overhead_bytes: int  # CUDA context / process; RAM: the server process itself
    reserve_bytes: int  # display reserve + safety margin, not counted in total
    capacity_bytes: int  # VRAM total or RAM total
    free_bytes: int  # free before launch
    bandwidth_gbs: float
    expert_bytes_on_cpu: int = 0  # only on the CPU entry
    mmap_bytes: int = 0  # CPU weights served from the page cache
    # only on the CPU entry: the host's model buffers as the engine will log them, by buffer name
    # (planner/placement.py host_model_buffers: CPU_Mapped = the mapped span of the file, CPU, CPU_REPACK
    # = the CPU's re-laid-out copies); what the monitor sets next to the engine's own lines
    model_buffers: dict = field(default_factory=dict)
    scratch_bytes: int = 0  # part of compute: a copy of a RAM-resident weight (first GPU)
    note: str = ""
    # not a field: a weak reference to the Plan that owns the device, set by the Plan (weak, so
    # the plans made on every slider move are freed without the cycle collector)
    _plan = None

    def __getstate__(self):  # a plan crosses processes (the advisor's workers): the owner link is redone there
        state = dict(self.__dict__)
        state.pop("_plan", None)
        return state

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.overhead_bytes

    @property
    def usable_bytes(self) -> int:
        return max(0, self.free_bytes - self.reserve_bytes)

    @property
    def headroom_bytes(self) -> int:
        return self.usable_bytes - self.total_bytes

    @property
    def short_bytes(self) -> int:
        """The one "short" figure: what must move off for the device to fit (its total past its usable memory),
        the same in the sentence, on the bar's label and in the tight case's "eats"."""
        return max(0, self.total_bytes - self.usable_bytes)

    @property
    def state(self) -> str:
        """The one verdict for this device, which the colour and the sentence both follow:
        "fits"  - the total is within the usable memory (free minus display reserve and margin);
        "tight" - over the usable but within what is free: it eats into the reserve and margin,
                  may load, but Phoenix does not recommend it;
        "short" - more than is free: the engine will run out of memory."""
        total = self.total_bytes
        if total <= self.usable_bytes:
            return "fits"
        return "tight" if total <= self.free_bytes else "short"

    @property
    def fits(self) -> bool:
        return self.state == "fits"

    def reason(self) -> str:
        """One sentence for a device that does not fit, empty otherwise. The advice comes from
        the whole plan when the device belongs to one (what helps depends on the other devices)."""
        state = self.state
        if state == "fits":
            return ""
        return _sentence(self, state, self.advice())

    def advice(self) -> str:
        """What to do about a device that does not fit ("" when it fits): for a place that shows its name,
        figures and state already (the split page's label over its bar)."""
        if self.state == "fits":
            return ""
        plan = self._plan() if self._plan is not None else None
        return plan.advice_for(self) if plan is not None else _alone_advice(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(total_bytes=self.total_bytes, usable_bytes=self.usable_bytes,
                 headroom_bytes=self.headroom_bytes, fits=self.fits, state=self.state,
                 reason=self.reason())
        return d




def _sentence(d: DevicePlan, state: str, advice: str) -> str:
    what = "System RAM" if d.kind == "cpu" else d.name
    if state == "tight":
        return (f"{what}: tight — eats {_mib(d.short_bytes)} of the {_mib(d.reserve_bytes)} "
                f"Phoenix keeps free; it may load, but Phoenix does not recommend it — {advice}.")
    return (f"{what}: {_mib(d.short_bytes)} short: needs {_mib(d.total_bytes)} where {_mib(d.usable_bytes)} is "
            f"usable, more than is free (it will run out of memory) — {advice}.")


def _alone_advice(d: DevicePlan) -> str:
    """Advice when nothing is known about the other devices."""
    if d.kind == "cpu":
        return "offload more layers to GPUs, use a smaller quant or a shorter context, or close other programs"
    if d.layers == 0:
        return "leave this GPU out"
    return "move a layer to another GPU or lower the context"


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


def _names(devs: list[DevicePlan]) -> str:
    names = [d.name if d.kind == "gpu" else "system RAM" for d in devs]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass
class Plan:
    model_name: str
    n_layer: int
    gpulayers: int
    tensor_split: list[float]
    context: int
    kv_cells: int
    devices: list[DevicePlan]
    assign: list[int]  # per layer 0..n_layer (output last): index into the GPU list, -1 = CPU
    predicted_tokens_per_s: float
    predicted_prompt_tokens_per_s: float
    pipeline_parallel: bool
    approximate: bool  # row split: estimated, not exact
    settings: object = None
    warnings: list[str] = field(default_factory=list)
    explanation: list[str] = field(default_factory=list)
    layer_bytes: int = 0  # weights + KV of the largest repeating layer: what "room for a layer" means
    # what the speed model read for this plan (planner/speed.py SpeedInputs); not in to_dict
    speed_inputs: object = field(default=None, repr=False)
    # the likely range of the measured tokens/s (held-out error of the plan's regime), the
    # regime ("single_gpu", "multi_gpu", "hybrid", "cpu"), and the speed with an empty and a
    # full KV cache (predicted_tokens_per_s is at the plan's kv_fill)
    speed_band: tuple[float, float] = (0.0, 0.0)
    speed_regime: str = ""
    # the band's quant family and device class (planner/speed.py quant_family, device_class), and
    # "few measurements (...)" when either has too few held-out rows to say its spread
    speed_family: str = ""
    speed_class: str = ""
    speed_band_note: str = ""
    # a known engine limit the speed model does not include (the RPC host's fixed CPU threads): the figure is
    # unreliable, the band's floor includes the limit, and every headline says so
    speed_caveat: str = ""
    tokens_per_s_empty: float = 0.0
    tokens_per_s_full: float = 0.0

    @property
    def gpus(self) -> list[DevicePlan]:
        return [d for d in self.devices if d.kind == "gpu"]

    @property
    def cpu(self) -> DevicePlan:
        return self.devices[-1]

    def __post_init__(self):
        me = weakref.ref(self)
        for d in self.devices:
            d._plan = me

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__post_init__()

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.devices)

    @property
    def state(self) -> str:
        """"short" if any device is short, else "tight" if any is tight, else "fits"."""
        states = {d.state for d in self.devices}
        return "short" if "short" in states else "tight" if "tight" in states else "fits"

    def verdict(self) -> str:
        """One sentence for the whole plan."""
        state = self.state
        if state == "fits":
            low = min(self.devices, key=lambda d: d.headroom_bytes)
            return f"Fits: every device stays within its usable memory (least headroom {_mib(low.headroom_bytes)}, {low.name})."
        hit = [d for d in self.devices if d.state == state]
        s = "s" if len(hit) == 1 else ""
        if state == "tight":
            return (f"Tight: {_names(hit)} eat{s} into the memory Phoenix keeps free; "
                    "it may load, but is not recommended.")
        return f"Does not fit: {_names(hit)} need{s} more memory than is free."

    def reasons(self) -> list[str]:
        return [d.reason() for d in self.devices if not d.fits]

    def _has_room(self, d: DevicePlan) -> bool:
        return d.headroom_bytes >= self.layer_bytes

    def advice_for(self, dev: DevicePlan) -> str:
        """What helps a device that does not fit, knowing the rest of the plan."""
        gpus = self.gpus
        if dev.kind == "cpu":
            if gpus and any(self._has_room(g) for g in gpus):
                return "offload more layers to GPUs or close other programs"
            return "use a smaller quant or a shorter context, or close other programs"
        if dev.layers == 0:
            return "leave this GPU out"  # its CUDA context alone does not fit
        roomy = [g for g in gpus if g is not dev and self._has_room(g)]
        if roomy:
            return f"move a layer to {_names(roomy)} or lower the context"
        # no other GPU can take a layer: the layers must go to system RAM
        return "lower GPU layers (put more layers in system RAM) or the context"

    def to_dict(self) -> dict:
        return {
            "model": self.model_name, "n_layer": self.n_layer, "gpulayers": self.gpulayers,
            "tensor_split": self.tensor_split, "context": self.context, "kv_cells": self.kv_cells,
            "devices": [d.to_dict() for d in self.devices], "fits": self.fits,
            "predicted_tokens_per_s": round(self.predicted_tokens_per_s, 2),
            "predicted_tokens_per_s_band": [round(x, 2) for x in self.speed_band], "speed_regime": self.speed_regime,
            "speed_family": self.speed_family, "speed_class": self.speed_class, "speed_band_note": self.speed_band_note,
            "speed_caveat": self.speed_caveat,
            "predicted_tokens_per_s_empty_context": round(self.tokens_per_s_empty, 2),
            "predicted_tokens_per_s_full_context": round(self.tokens_per_s_full, 2),
            "predicted_prompt_tokens_per_s": round(self.predicted_prompt_tokens_per_s, 1),
            "prompt_estimate_is_rough": True, "pipeline_parallel": self.pipeline_parallel,
            "approximate": self.approximate, "warnings": self.warnings, "explanation": self.explanation,
            "state": self.state, "verdict": self.verdict(), "reasons": self.reasons(),
        }
