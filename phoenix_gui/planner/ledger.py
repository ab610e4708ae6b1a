"""Plain results of a plan: one DevicePlan per GPU and one for the CPU side."""

from __future__ import annotations

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
    scratch_bytes: int = 0  # part of compute: a copy of a RAM-resident weight (first GPU)
    note: str = ""

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
    def fits(self) -> bool:
        return self.headroom_bytes >= 0

    @property
    def status(self) -> str:
        """"ok"; "tight" (eats into the reserve and margin); "oom" (more than is free)."""
        if self.fits:
            return "ok"
        return "tight" if self.total_bytes <= self.free_bytes else "oom"

    def reason(self) -> str:
        """One sentence for a device that does not fit, empty otherwise."""
        if self.fits:
            return ""
        short = -self.headroom_bytes
        if self.kind == "cpu":
            return (f"System RAM: {_mib(short)} short of the usable {_mib(self.usable_bytes)} "
                    "— offload more layers to GPUs or close other programs.")
        what = "move a layer to another GPU or lower the context"
        if self.layers == 0:
            what = "leave this GPU out"
        return f"{self.name}: {_mib(short)} short — {what}."

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(total_bytes=self.total_bytes, usable_bytes=self.usable_bytes,
                 headroom_bytes=self.headroom_bytes, fits=self.fits, status=self.status, reason=self.reason())
        return d


def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


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

    @property
    def gpus(self) -> list[DevicePlan]:
        return [d for d in self.devices if d.kind == "gpu"]

    @property
    def cpu(self) -> DevicePlan:
        return self.devices[-1]

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.devices)

    def reasons(self) -> list[str]:
        return [d.reason() for d in self.devices if not d.fits]

    def to_dict(self) -> dict:
        return {
            "model": self.model_name, "n_layer": self.n_layer, "gpulayers": self.gpulayers,
            "tensor_split": self.tensor_split, "context": self.context, "kv_cells": self.kv_cells,
            "devices": [d.to_dict() for d in self.devices], "fits": self.fits,
            "predicted_tokens_per_s": round(self.predicted_tokens_per_s, 2),
            "predicted_prompt_tokens_per_s": round(self.predicted_prompt_tokens_per_s, 1),
            "prompt_estimate_is_rough": True, "pipeline_parallel": self.pipeline_parallel,
            "approximate": self.approximate, "warnings": self.warnings, "explanation": self.explanation,
            "reasons": self.reasons(),
        }
