"""The wizard's session as a plain, evented Python object (no Qt): widgets bind to it, tests drive it.

Every value is an evented Field (session/events.py): writing it validates, stores and announces its topic,
so each widget only redraws what it shows; the plan is computed lazily, once per change. The setters below
normalise what a control gives (a context rounded to 256 tokens) and announce once. The translation to and
from the planner's PlanSettings and the saved settings is session/translation.py; the split page's editing
is session/split.py, other PCs and the rig session/cluster.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping

from .. import validate as v
from ..backends.commandline import launch_command
from ..backends.kcpps import KcppsImport
from ..config import UserSettings
from ..engines.request import LaunchCommand
from ..hardware.cluster import cluster_rig, machine_of
from ..hardware.rig import RemoteNode, Rig
from ..model.info import ModelInfo
from ..planner import Plan, PlanSettings, make_plan
from ..planner.calibration import with_calibration
from ..planner.settings import BACKENDS, CACHE_TYPES, DEFAULT_CONTEXT, OBJECTIVES
from . import translation
from .cluster import Cluster
from .devices import device_ids, measured_key, split_rig
from .events import (CONTEXT, DEVICES, LAUNCH, MODEL, NOTES, PLAN, RIG, SPLIT, Evented, Field, SettingError,
                     checked)
from .split import SplitEditing

OPENED_ON_FASTEST = ("Opened on the fastest plan that fits (auto-fit): move the sliders, type a split or import "
                     "a .kcpps and yours is kept.")


def _whole(what: str, lo: int | None = None, none: bool = False):
    return lambda _st, x: None if none and x is None else checked(v.integer, x, what, lo)


def _of(kind, what: str, none: bool = False):
    """A check that a value is of a type (a tuple of types: any of them), or None where that is allowed."""
    def check(_st, x):
        if (x is None and none) or isinstance(x, kind):
            return x
        raise SettingError(f"{what} cannot be {x!r}.")
    return check


def _threads(_st, n):
    return None if n is None else checked(v.integer, n, "CPU threads", 1, 4096)


class WizardState(Evented, SplitEditing, Cluster):
    model = Field(MODEL, None)
    model_path = Field(MODEL, None)  # None with a preset model (demo)
    model_error = Field(MODEL, "")
    # Per-device state, kept by device id (session/devices.py), so it follows a card wherever the rig lists it;
    # `order`, `included`, `shares` and `locked` below show it by rig index, as the pages and the planner count.
    _order_ids = Field(DEVICES, factory=list)  # every device in the user's order
    _included_ids = Field(DEVICES, factory=set)
    # device -> split weight (only ratios matter; auto-fit and layer moves store integer layer counts, which
    # llama.cpp reproduces exactly)
    _share_of = Field(SPLIT, factory=dict)
    _locked_ids = Field(SPLIT, factory=set)
    gpulayers = Field(SPLIT, None, _whole("The GPU layers", 0, none=True))  # None = all layers
    context = Field(CONTEXT, DEFAULT_CONTEXT, _whole("The context", 256))
    cache_type = Field(CONTEXT, "f16", lambda _st, x: checked(v.choice, x, "KV cache type", CACHE_TYPES))
    flash_attn = Field(CONTEXT, True, _of(bool, "Flash attention"))
    batch = Field(CONTEXT, 512, _whole("The batch size"))
    # free memory kept on every GPU: Phoenix's guess, or what a tune measured
    margin_mib = Field(CONTEXT, 256.0, lambda _st, x: checked(v.mib, x, "The safety margin (MiB)"))
    moecpu = Field(CONTEXT, 0, _whole("The MoE expert offload (moecpu)", 0))
    # tensor overrides (regex, device): auto-fit's experts kept in RAM per card, or a .kcpps's own; they follow
    # the plan into the command line, exports and saved settings
    overrides = Field(SPLIT, (), _of(tuple, "The tensor overrides"))
    threads = Field(CONTEXT, None, _threads)  # CPU threads (--threads / -t); None: the engine's choice
    use_mmap = Field(CONTEXT, None, _of(bool, "use_mmap", none=True))  # None: the engine's default
    # engine options Phoenix does not plan, kept from the user's .kcpps (validate.ENGINE_OPTIONS): (name, value) pairs
    engine_options = Field(LAUNCH, (), lambda _st, x: checked(v.engine_options, x))
    backend = Field(LAUNCH, "koboldcpp", lambda _st, x: checked(v.choice, x, "backend", BACKENDS))
    executable = Field(LAUNCH, None, _of((str, os.PathLike), "The executable path", none=True))
    host = Field(LAUNCH, "127.0.0.1", _of(str, "The host"))
    port = Field(LAUNCH, 5001, _whole("The port"))
    objective = Field(None, "fastest", lambda _st, x: checked(v.choice, x, "auto-fit objective", OBJECTIVES))
    rig_path = Field(RIG, None)
    notes = Field(NOTES, factory=list)

    def __init__(self, rig: Rig, nodes: list[RemoteNode] | None = None):
        super().__init__()
        self._plan: Plan | None = None
        self._parked: dict[tuple, float] = {}  # device id -> its fraction of the split when it was unticked
        self.explanation: list[str] = []  # from the last auto-fit
        self.explained: PlanSettings | None = None  # the settings that explanation is about
        self.baseline: Plan | None = None  # the imported .kcpps configuration, for "what you had before"
        self.baseline_name = ""
        self.unreachable: dict[str, str] = {}  # address -> why it could not be described
        self.down: dict[str, str] = {}  # a described PC that stopped answering -> why
        self.saved_nodes: list[str] = []  # addresses from the settings, not yet described
        # The user's own split (typed, dragged, imported, saved, a tune's winner): it always wins. Without one, a
        # new model opens on the fastest plan that fits, not on the engine's default (a wall of red for a newcomer).
        self.split_chosen = False
        # What a tune measured on this PC, per plan (measured_key): (mean tokens/s, runs). The split page shows
        # the measurement of a plan the tune ran rather than a prediction of it.
        self.measured: dict = {}
        self._local, file_nodes = split_rig(rig)  # this PC's (or the simulated rig's) own devices
        self.nodes: list[RemoteNode] = list(nodes or file_nodes)  # other PCs sharing their devices over RPC
        self._rig = cluster_rig(self._local, self.nodes) if self.nodes else rig
        self._ids = device_ids(self._rig)  # rig index -> device id
        self._index = {d: i for i, d in enumerate(self._ids)}
        self.order = list(range(len(self._rig.gpus)))
        self.included = set(self.order)
        self.reset_shares()

    def _inputs_changed(self) -> None:
        self._plan = None

    # --- the rig: per-device state is kept by device id, and shown by rig index ---
    @property
    def rig(self) -> Rig:
        return self._rig

    @rig.setter
    def rig(self, rig: Rig) -> None:
        """Another rig: the ticks, order, shares and locks of the devices it still has stay theirs, at whatever
        place it lists them; a device new to it starts ticked, with the share llama.cpp would give it (free
        memory); a device it no longer has is forgotten."""
        ids = device_ids(rig)
        here, known = set(ids), set(self._order_ids)
        kept = {d: w for d, w in self._share_of.items() if d in here}
        with self.grouped():
            self._rig, self._ids, self._index = rig, ids, {d: i for i, d in enumerate(ids)}
            fresh = [i for i, d in enumerate(ids) if d not in known]
            self.order = self._engine_order([self._index[d] for d in self._order_ids if d in here] + fresh)
            self._included_ids = {d for d in self._included_ids if d in here} | {ids[i] for i in fresh}
            self._locked_ids = {d for d in self._locked_ids if d in here}
            self._parked = {d: f for d, f in self._parked.items() if d in here}
            self._share_of = kept
            for i in fresh:
                self.shares = {**self.shares, i: self._default_share(i) if kept else 0.0}
            if not kept or sum(self._share_of.values()) <= 0:
                self.reset_shares()
            self._emit(RIG, DEVICES, SPLIT)

    @property
    def order(self) -> list[int]:
        """Every device (rig index) in the user's order."""
        return [self._index[d] for d in self._order_ids]

    @order.setter
    def order(self, order: Iterable[int]) -> None:
        self._order_ids = [self._ids[i] for i in order]

    @property
    def included(self) -> frozenset[int]:
        """The ticked devices (rig indices)."""
        return frozenset(self._index[d] for d in self._included_ids)

    @included.setter
    def included(self, gpus: Iterable[int]) -> None:
        self._included_ids = {self._ids[i] for i in gpus}

    @property
    def locked(self) -> frozenset[int]:
        """The devices (rig indices) whose layers stay as they are while others move."""
        return frozenset(self._index[d] for d in self._locked_ids)

    @locked.setter
    def locked(self, gpus: Iterable[int]) -> None:
        self._locked_ids = {self._ids[i] for i in gpus}

    @property
    def shares(self) -> Mapping[int, float]:
        """Rig index -> split weight, read-only (write a whole new mapping)."""
        return MappingProxyType({self._index[d]: w for d, w in self._share_of.items()})

    @shares.setter
    def shares(self, shares: Mapping[int, float]) -> None:
        self._share_of = {self._ids[i]: w for i, w in shares.items()}

    def set_calibration(self, cal) -> None:
        """Put this PC's calibration for the chosen engine on the rig (None: take it off)."""
        if self.rig.calibration != cal:
            with self.grouped():
                self.rig = with_calibration(self.rig, cal)
                self.changed()

    def set_system(self, system) -> None:
        """The CPU and RAM measured on a worker after start."""
        self.rig.system = system
        self.changed()

    def _set(self, topic: str, **values) -> None:
        """Write fields and announce `topic` once, even when nothing changed (the control shows the value kept)."""
        with self.grouped():
            for name, value in values.items():
                setattr(self, name, value)
            self._emit(topic)

    # --- derived ---
    @property
    def devices(self) -> list[int]:
        """Included GPUs in the user's order: the device order the engine gets."""
        return [i for i in self.order if i in self.included]

    @property
    def max_layers(self) -> int:
        return self.model.n_layer + 1 if self.model else 1

    @property
    def offloaded_layers(self) -> int:
        return 0 if not self.devices else self.max_layers if self.gpulayers is None else self.gpulayers

    def gpu_label(self, gi: int) -> str:
        """The card's short name, with its index and PCI bus when another card has the same name."""
        g = self.rig.gpus[gi]
        if g.is_remote:  # "CPU on gaming-pc": a remote device is named with its PC, as the engine's RPCn is
            twins = [x for x in self.rig.gpus if x.node == g.node and x.short_name == g.short_name]
            name = f"{g.short_name} #{g.index}" if len(twins) > 1 else g.short_name
            return f"{name} on {machine_of(self.rig, g)}"
        twins = [x for x in self.rig.gpus if x.short_name == g.short_name and not x.is_remote]
        return f"{g.short_name} #{gi} ({g.pci_bus_id})" if len(twins) > 1 else g.short_name

    def settings(self) -> PlanSettings:
        return translation.plan_settings(self)

    def apply(self, s: PlanSettings, chosen: bool = True) -> None:
        """Set every control from PlanSettings (session/translation.py)."""
        translation.apply_to_state(self, s, chosen)

    def to_user_settings(self, us: UserSettings) -> UserSettings:
        return translation.to_user_settings(self, us)

    def apply_user_settings(self, us: UserSettings) -> None:
        translation.apply_user_settings(self, us)

    def plan(self) -> Plan | None:
        if self.model is None:
            return None
        if self._plan is None:
            self._plan = make_plan(self.model, self.rig, self.settings())
        return self._plan

    def set_measured(self, runs: Iterable[tuple[PlanSettings, float]]) -> None:
        """A tune's measured whole-model plans (settings, tokens/s), kept per plan for this session."""
        if self.model is None:
            return
        got: dict = {}
        for s, tps in runs:
            if tps and tps > 0:
                got.setdefault(measured_key(make_plan(self.model, self.rig, s), self.rig), []).append(float(tps))
        self.measured.update({k: (sum(v) / len(v), len(v)) for k, v in got.items()})
        self._emit(PLAN)  # the same plan, shown with its measurement

    def measured_speed(self, plan: Plan | None = None) -> tuple[float, int] | None:
        """(mean tokens/s, runs) a tune measured for this very plan, or None."""
        plan = plan or self.plan()
        return None if plan is None or not self.measured else self.measured.get(measured_key(plan, self.rig))

    def launch_blocker(self) -> str:
        """Why this session cannot be launched (one sentence), or "" when it can."""
        if self.model is None:
            return "Choose a model first."
        if not self.model_path:
            return "The demo model is a preset without a file: choose a real .gguf to launch."
        return ""

    def command(self) -> LaunchCommand | None:
        p = self.plan()
        if p is None:
            return None
        path = self.model_path or f"{self.model.name}.gguf"
        return launch_command(p, self.rig, path, self.executable)

    # --- model page ---
    def set_model(self, model: ModelInfo | None, path: str | None, error: str = "") -> None:
        with self.grouped():
            self.model, self.model_path, self.model_error = model, path, error
            if model is not None:
                if self.gpulayers is not None:
                    self.gpulayers = min(self.gpulayers, model.n_layer + 1)
                # never past the trained context: from DEFAULT_CONTEXT that is default_context(), as in the CLI
                self.context = min(self.context, self.context_limit)
                self.moecpu = min(self.moecpu, model.n_layer)
            self.baseline = None
            self._emit(MODEL, SPLIT, CONTEXT)
            if model is not None and not self.split_chosen and self.devices:
                self.run_auto_fit("fastest")
                self.explanation.insert(0, OPENED_ON_FASTEST)
                self.explained = self.settings()

    def set_notes(self, notes: list[str]) -> None:
        self._set(NOTES, notes=list(notes))

    # --- context page ---
    @property
    def context_limit(self) -> int:
        limit = self.model.n_ctx_train if self.model and self.model.n_ctx_train else 1 << 20
        return max(256, limit // 256 * 256)

    def set_context(self, tokens: int) -> None:
        self._set(CONTEXT, context=max(256, min(int(tokens) // 256 * 256, self.context_limit)))

    def set_cache_type(self, kind: str) -> None:
        self._set(CONTEXT, cache_type=checked(v.choice, kind, "KV cache type", CACHE_TYPES))

    def set_flash_attn(self, on: bool) -> None:
        self._set(CONTEXT, flash_attn=bool(on))

    def set_batch(self, tokens: int) -> None:
        self._set(CONTEXT, batch=checked(v.batch, tokens))

    def set_margin(self, mib: float) -> None:
        self._set(CONTEXT, margin_mib=checked(v.mib, mib, "The safety margin (MiB)"))

    def set_threads(self, n: int | None) -> None:
        """CPU threads for the engine; None (or 0): the engine's own choice."""
        self._set(CONTEXT, threads=None if not n else checked(v.integer, n, "CPU threads", 1, 4096))

    def kept_text(self) -> str:
        """'Kept from your config: --threads 8, --usemlock' for what an imported .kcpps set that Phoenix carries as
        it was ("" without an import, or when it set none of them)."""
        if not self.baseline_name:
            return ""
        b = self.baseline.settings if self.baseline is not None else None
        kept = []
        if b is not None and b.threads and b.threads == self.threads:
            kept.append(f"--threads {self.threads}")
        if b is not None and b.use_mmap and self.use_mmap:
            kept.append("--usemmap")
        kept += [v.engine_option_text(n, x) for n, x in self.engine_options]
        return f"Kept from your config ({self.baseline_name}): {', '.join(kept)}." if kept else ""

    def set_moecpu(self, n: int) -> None:
        self._set(CONTEXT, moecpu=max(0, min(int(n), self.model.n_layer if self.model else 0)))

    # --- launch page ---
    def set_backend(self, backend: str, executable: str | None = None) -> None:
        if backend not in BACKENDS:
            raise SettingError(f"Unknown backend {backend!r}.")
        self._set(LAUNCH, backend=backend, executable=executable)

    def set_executable(self, path: str | None) -> None:
        self._set(LAUNCH, executable=path or None)

    def set_host(self, host: str) -> None:
        self._set(LAUNCH, host=checked(v.host, (host or "").strip() or "127.0.0.1"))

    def set_port(self, port: int) -> None:
        self._set(LAUNCH, port=checked(v.port, port))

    def set_objective(self, objective: str) -> None:
        if objective not in OBJECTIVES:
            raise SettingError(f"Unknown auto-fit objective {objective!r}.")
        self.objective = objective

    # --- imports and persistence ---
    def apply_kcpps(self, imp: KcppsImport) -> None:
        """koboldcpp numbers this PC's GPUs by PCI bus order; its --usecuda ids pick and order them. Other
        PCs' devices (rpctargets) come first in its split: those PCs must be added here, in that order."""
        gpus = self.rig.gpus
        local = [i for i, g in enumerate(gpus) if not g.is_remote]
        pci = sorted(local, key=lambda i: gpus[i].pci_bus_id.lower())
        chosen = [pci[i] for i in imp.gpu_ids if i < len(pci)] if imp.gpu_ids else pci
        rpc = list(imp.rpc_targets)
        if [n.address for n in self.nodes if n.address in rpc] != rpc:
            raise SettingError(f"{Path(imp.path).name} uses devices of other PCs ({', '.join(rpc)}): add "
                               f"{'them' if len(rpc) > 1 else 'it'} on the Hardware page (Add a PC"
                               f"{', in this order' if len(rpc) > 1 else ''}) and import it again.")
        chosen = [i for i, g in enumerate(gpus) if g.node in rpc] + chosen
        with self.grouped():
            self.apply(imp.settings.with_(devices=tuple(chosen), backend="koboldcpp"))
            self.baseline_name = Path(imp.path).name
            self.baseline = make_plan(self.model, self.rig, self.settings()) if self.model is not None else None
            self.set_notes([self.imported_text(imp)] + imp.notes)

    def imported_text(self, imp: KcppsImport) -> str:
        """The Model page's confirmation of an import: what the config set, and what is kept as it was."""
        s = self.settings()
        got = [f"context {s.context:,}", f"batch {s.batch}", f"KV cache {s.cache_type_k}",
               f"flash attention {'on' if s.flash_attn else 'off'}"]
        if not self.devices:
            got.append("CPU only")
        else:
            layers = "all layers" if self.gpulayers is None else f"{self.gpulayers} layers"
            got.append(f"{layers} on {', '.join(self.gpu_label(i) for i in self.devices)}")
            if imp.settings.tensor_split:
                got.append("split " + " ".join(f"{x:g}" for x in imp.settings.tensor_split))
        if s.moecpu:
            got.append(f"experts of {s.moecpu} layers in RAM")
        if s.overrides:
            got.append(f"{len(s.overrides)} tensor override{'s' if len(s.overrides) > 1 else ''}")
        kept = self.kept_text()
        return f"Imported {Path(imp.path).name}: {', '.join(got)}." + (f" {kept}" if kept else "")

