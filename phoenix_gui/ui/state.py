"""The wizard's state as a plain Python object (no Qt): the widgets bind to it, the tests drive it.

Every change goes through a method here, which recomputes the plan through the planner and
notifies listeners; the widgets only display what the state says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..backends.commandline import LaunchCommand, launch_command
from ..backends.kcpps import KcppsImport
from ..config import UserSettings
from ..hardware.rig import Rig
from ..model.info import ModelInfo
from ..planner import Plan, PlanSettings, make_plan
from ..planner.autofit import FitResult, auto_fit

SHARE_TOTAL = 100.0


@dataclass
class WizardState:
    rig: Rig
    model: ModelInfo | None = None
    model_path: str | None = None  # None with a preset model (demo)
    model_error: str = ""
    order: list[int] = field(default_factory=list)  # every GPU (rig index) in the user's order
    included: set[int] = field(default_factory=set)
    shares: dict[int, float] = field(default_factory=dict)  # rig index -> split weight (only ratios matter;
    # auto-fit stores integer layer counts, which llama.cpp reproduces exactly)
    locked: set[int] = field(default_factory=set)
    gpulayers: int | None = None  # None = all layers
    context: int = 4096
    cache_type: str = "f16"
    flash_attn: bool = True
    batch: int = 512
    moecpu: int = 0
    backend: str = "koboldcpp"
    executable: str | None = None
    host: str = "127.0.0.1"
    port: int = 5001
    objective: str = "fastest"
    rig_path: str | None = None
    explanation: list[str] = field(default_factory=list)  # from the last auto-fit
    explained: PlanSettings | None = None  # the settings that explanation is about
    baseline: Plan | None = None  # the imported .kcpps configuration, for "what you had before"
    baseline_name: str = ""
    notes: list[str] = field(default_factory=list)
    _plan: Plan | None = field(default=None, repr=False)
    _listeners: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def __post_init__(self):
        if not self.order:
            self.order = list(range(len(self.rig.gpus)))
        if not self.included:
            self.included = set(self.order)
        if not self.shares:
            self.reset_shares()

    # --- observers ---
    def subscribe(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def changed(self) -> None:
        self._plan = None
        for fn in list(self._listeners):
            fn()

    # --- derived ---
    @property
    def devices(self) -> list[int]:
        """Included GPUs in the user's order: the device order the engine gets."""
        return [i for i in self.order if i in self.included]

    @property
    def max_layers(self) -> int:
        return self.model.n_layer + 1 if self.model else 1

    def settings(self) -> PlanSettings:
        devs = self.devices
        split = tuple(self.shares.get(i, 0.0) for i in devs) if devs else None
        return PlanSettings(
            context=self.context, cache_type_k=self.cache_type, cache_type_v=self.cache_type,
            flash_attn=self.flash_attn, batch=self.batch, gpulayers=self.gpulayers, tensor_split=split,
            moecpu=self.moecpu if self.model and self.model.is_moe else 0, backend=self.backend,
            devices=tuple(devs), host=self.host, port=self.port,
        )

    def plan(self) -> Plan | None:
        if self.model is None:
            return None
        if self._plan is None:
            self._plan = make_plan(self.model, self.rig, self.settings())
        return self._plan

    def command(self) -> LaunchCommand | None:
        p = self.plan()
        if p is None:
            return None
        path = self.model_path or f"{self.model.name}.gguf"
        return launch_command(p, self.rig, path, self.executable)

    # --- hardware page ---
    def set_included(self, gpu: int, on: bool) -> None:
        if on:
            self.included.add(gpu)
            self.shares.setdefault(gpu, 0.0)
        else:
            self.included.discard(gpu)
            self.locked.discard(gpu)
        self._renormalise()
        self.changed()

    def move_gpu(self, gpu: int, delta: int) -> None:
        i = self.order.index(gpu)
        j = max(0, min(len(self.order) - 1, i + delta))
        if i != j:
            self.order.insert(j, self.order.pop(i))
            self.changed()

    def set_rig(self, rig: Rig) -> None:
        self.rig = rig
        self.order = list(range(len(rig.gpus)))
        self.included = set(self.order)
        self.locked.clear()
        self.reset_shares()
        self.changed()

    # --- model page ---
    def set_model(self, model: ModelInfo | None, path: str | None, error: str = "") -> None:
        self.model, self.model_path, self.model_error = model, path, error
        if model is not None:
            if self.gpulayers is not None:
                self.gpulayers = min(self.gpulayers, model.n_layer + 1)
            if model.n_ctx_train:
                self.context = min(self.context, max(256, model.n_ctx_train))
            self.moecpu = min(self.moecpu, model.n_layer)
        self.changed()

    # --- context page ---
    def set_context(self, tokens: int) -> None:
        limit = self.model.n_ctx_train if self.model and self.model.n_ctx_train else 1 << 20
        self.context = max(256, min(int(tokens) // 256 * 256, max(256, limit // 256 * 256)))
        self.changed()

    def update(self, **kw) -> None:
        for k, v in kw.items():
            if not hasattr(self, k) or k.startswith("_"):
                raise AttributeError(k)
            setattr(self, k, v)
        self.changed()

    # --- split page ---
    def reset_shares(self) -> None:
        """Start from llama.cpp's own default: proportional to free memory."""
        devs = self.devices
        free = {i: max(1.0, float(self.rig.gpus[i].free_bytes)) for i in devs}
        total = sum(free.values()) or 1.0
        self.shares = {i: SHARE_TOTAL * free[i] / total for i in devs}

    def _renormalise(self) -> None:
        devs = self.devices
        self.shares = {i: self.shares.get(i, 0.0) for i in devs}
        total = sum(self.shares.values())
        if devs and total <= 0:
            self.reset_shares()
        elif devs:
            self.shares = {i: v * SHARE_TOTAL / total for i, v in self.shares.items()}

    def set_locked(self, gpu: int, locked: bool) -> None:
        (self.locked.add if locked else self.locked.discard)(gpu)
        self.changed()

    def percent(self, gpu: int) -> float:
        total = sum(self.shares.get(i, 0.0) for i in self.devices)
        return SHARE_TOTAL * self.shares.get(gpu, 0.0) / total if total > 0 else 0.0

    def set_share(self, gpu: int, value: float) -> float:
        """Set one GPU's share (percent); locked GPUs keep theirs, the other unlocked ones make room
        in proportion to what they had. Returns the share actually set."""
        if gpu not in self.included or gpu in self.locked:
            return self.percent(gpu)
        self._renormalise()  # work in percent from here on
        others = [i for i in self.devices if i != gpu and i not in self.locked]
        fixed = sum(self.shares[i] for i in self.devices if i in self.locked and i != gpu)
        if not others:
            return self.shares[gpu]  # everything else is locked: nothing can make room
        value = max(0.0, min(float(value), SHARE_TOTAL - fixed))
        rest = SHARE_TOTAL - fixed - value
        before = sum(self.shares[i] for i in others)
        for i in others:
            self.shares[i] = rest * (self.shares[i] / before if before > 0 else 1.0 / len(others))
        self.shares[gpu] = value
        self.changed()
        return value

    def set_gpulayers(self, n: int | None) -> None:
        self.gpulayers = None if n is None or n >= self.max_layers else max(0, int(n))
        self.changed()

    def run_auto_fit(self, objective: str | None = None) -> FitResult:
        """Set the sliders to the planner's answer; the user can drag from there."""
        self.objective = objective or self.objective
        base = self.settings().with_(tensor_split=None, gpulayers=None, moecpu=0, devices=tuple(self.devices))
        fit = auto_fit(self.model, self.rig, base, self.objective)
        s = fit.settings
        chosen = list(s.devices or ())
        self.included = set(chosen)
        # keep the user's order for the chosen GPUs, left-out ones after them
        self.order = [i for i in self.order if i in chosen] + [i for i in self.order if i not in chosen]
        counts = list(s.tensor_split or ())
        self.shares = {i: float(c) for i, c in zip(chosen, counts)}
        self.locked -= set(self.order) - self.included
        self.gpulayers = None if s.gpulayers is None or s.gpulayers >= self.max_layers else s.gpulayers
        self.moecpu = s.moecpu
        self.context = s.context
        self.explanation = list(fit.plan.explanation)
        self.explained = self.settings()
        self.changed()
        return fit

    def current_explanation(self) -> list[str]:
        """The auto-fit explanation while the user has not moved anything since."""
        return self.explanation if self.explained == self.settings() else []

    # --- the one translation from PlanSettings to the wizard's controls ---
    def apply(self, s: PlanSettings) -> None:
        """Set every control from PlanSettings (auto-fit, .kcpps import, saved settings, OOM retry all
        come through here). Devices keep the user's order for the chosen GPUs, left-out ones after them."""
        n = len(self.rig.gpus)
        chosen = [i for i in (s.devices if s.devices is not None else range(n)) if 0 <= i < n]
        chosen = list(dict.fromkeys(chosen))
        self.order = chosen + [i for i in self.order if i not in chosen] + [i for i in range(n) if i not in chosen and i not in self.order]
        self.included = set(chosen)
        self.locked &= self.included
        ts = list(s.tensor_split or ())
        if ts and sum(ts) > 0:
            ts = ts[:len(chosen)] + [0.0] * max(0, len(chosen) - len(ts))
            self.shares = {i: float(w) for i, w in zip(chosen, ts)}
        else:
            self.reset_shares()
        self.gpulayers = None if s.gpulayers is None or s.gpulayers >= self.max_layers else max(0, int(s.gpulayers))
        self.context, self.cache_type, self.flash_attn, self.batch = s.context, s.cache_type_k, s.flash_attn, s.batch
        self.moecpu, self.backend, self.host, self.port = s.moecpu, s.backend, s.host, s.port
        self.changed()

    # --- imports and persistence ---
    def apply_kcpps(self, imp: KcppsImport) -> None:
        s = imp.settings
        self.context, self.batch, self.flash_attn = s.context, s.batch, s.flash_attn
        self.cache_type = s.cache_type_k
        self.gpulayers = s.gpulayers
        self.moecpu = s.moecpu
        self.port, self.host = s.port, s.host
        self.backend = "koboldcpp"
        pci = sorted(range(len(self.rig.gpus)), key=lambda i: self.rig.gpus[i].pci_bus_id.lower())
        if imp.gpu_ids:
            chosen = [pci[i] for i in imp.gpu_ids if i < len(pci)]
        else:
            chosen = pci
        self.order = chosen + [i for i in pci if i not in chosen]
        self.included = set(chosen)
        ts = list(s.tensor_split or [])
        if ts:
            ts = ts[:len(chosen)] + [0.0] * max(0, len(chosen) - len(ts))
            self.shares = {i: float(w) for i, w in zip(chosen, ts)}
        else:
            self.reset_shares()
        self.notes = list(imp.notes)
        self._plan = None
        if self.model is not None:
            self.baseline = make_plan(self.model, self.rig, self.settings())
            self.baseline_name = Path(imp.path).name
        self.changed()

    def to_user_settings(self, us: UserSettings) -> UserSettings:
        us.context, us.cache_type, us.flash_attn, us.batch = self.context, self.cache_type, self.flash_attn, self.batch
        us.moecpu, us.gpulayers, us.backend = self.moecpu, self.gpulayers, self.backend
        us.split = [self.shares.get(i, 0.0) for i in self.devices]
        us.devices = [self.rig.gpus[i].uuid for i in self.devices]
        us.host, us.port, us.objective = self.host, self.port, self.objective
        if self.executable:
            us.executables[self.backend] = self.executable
        us.model_path = self.model_path
        return us

    def apply_user_settings(self, us: UserSettings) -> None:
        self.context, self.cache_type, self.flash_attn, self.batch = us.context, us.cache_type, us.flash_attn, us.batch
        self.moecpu, self.gpulayers, self.backend = us.moecpu, us.gpulayers, us.backend
        self.host, self.port, self.objective = us.host, us.port, us.objective
        self.executable = us.executables.get(us.backend)
        by_uuid = {g.uuid: i for i, g in enumerate(self.rig.gpus)}
        if us.devices and all(u in by_uuid for u in us.devices):
            chosen = [by_uuid[u] for u in us.devices]
            self.order = chosen + [i for i in range(len(self.rig.gpus)) if i not in chosen]
            self.included = set(chosen)
            if us.split and len(us.split) == len(chosen) and sum(us.split) > 0:
                self.shares = {i: float(v) for i, v in zip(chosen, us.split)}
            else:
                self.reset_shares()
        self.changed()
