"""The wizard's session as a plain, evented Python object (no Qt): widgets bind to it, tests drive it.

Every change goes through a typed setter here; the setter validates, recomputes nothing itself (the
plan is computed lazily, once per change) and announces which topics changed, so each widget only
redraws what it shows. `settings()` and `apply(PlanSettings)` are the one translation between the
wizard's controls (device order, ticks, shares, locks) and the planner's PlanSettings: auto-fit,
.kcpps import, saved settings and the out-of-memory retry all go through `apply`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from .. import validate as v
from ..backends.commandline import LaunchCommand, launch_command
from ..backends.kcpps import KcppsImport
from ..config import UserSettings
from ..hardware.cluster import RemoteNode, cluster_rig, machine_of, nodes_of
from ..hardware.rig import Rig
from ..model.info import ModelInfo
from ..planner import Plan, PlanSettings, make_plan
from ..planner.autofit import FitResult, auto_fit
from ..planner.settings import BACKENDS, CACHE_TYPES, DEFAULT_CONTEXT, OBJECTIVES

SHARE_TOTAL = 100.0
OPENED_ON_FASTEST = ("Opened on the fastest plan that fits (auto-fit): move the sliders, type a split or import "
                     "a .kcpps and yours is kept.")

# Topics a listener can follow. PLAN is announced with every change that can change the plan.
RIG, DEVICES, SPLIT, MODEL, CONTEXT, LAUNCH, NOTES, PLAN = ("rig", "devices", "split", "model", "context", "launch",
                                                            "notes", "plan")
ALL_TOPICS = frozenset((RIG, DEVICES, SPLIT, MODEL, CONTEXT, LAUNCH, NOTES, PLAN))
_PLAN_INPUTS = {RIG, DEVICES, SPLIT, MODEL, CONTEXT, LAUNCH}

Listener = Callable[[frozenset], None]


class SettingError(v.InputError):
    """A value the wizard cannot use; the message is one sentence for the user (the shared
    validate.InputError, so the wizard and the command line refuse the same values alike)."""


def _checked(check, *args):
    """Run a shared validator; its InputError becomes the wizard's SettingError (same sentence)."""
    try:
        return check(*args)
    except SettingError:
        raise
    except v.InputError as e:
        raise SettingError(str(e)) from None


def parse_split(text: str) -> list[float]:
    """koboldcpp's --tensor_split text ("1.5 4.5 3", commas allowed) -> weights."""
    parts = text.replace(",", " ").split()
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise SettingError("A split is numbers separated by spaces, like 1.5 4.5 3.") from None
    return list(_checked(v.split, vals))


@dataclass
class WizardState:
    rig: Rig
    model: ModelInfo | None = None
    model_path: str | None = None  # None with a preset model (demo)
    model_error: str = ""
    order: list[int] = field(default_factory=list)  # every GPU (rig index) in the user's order
    included: set[int] = field(default_factory=set)
    shares: dict[int, float] = field(default_factory=dict)  # rig index -> split weight (only ratios matter;
    # auto-fit and layer moves store integer layer counts, which llama.cpp reproduces exactly)
    locked: set[int] = field(default_factory=set)
    gpulayers: int | None = None  # None = all layers
    context: int = DEFAULT_CONTEXT
    cache_type: str = "f16"
    flash_attn: bool = True
    batch: int = 512
    margin_mib: float = 256.0  # free memory kept on every GPU: Phoenix's guess, or what a tune measured
    moecpu: int = 0
    # tensor overrides (regex, device): auto-fit's experts kept in RAM per card, or a .kcpps's own; they follow
    # the plan into the command line, exports and saved settings
    overrides: tuple = ()
    threads: int | None = None  # CPU threads (--threads / -t); None: the engine's choice
    use_mmap: bool | None = None  # None: the engine's default; a .kcpps's usemmap as the user set it
    # engine options Phoenix does not plan, kept from the user's .kcpps (validate.ENGINE_OPTIONS): (name, value) pairs
    engine_options: tuple = ()
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
    # Other PCs sharing their devices over RPC. `rig` (what the planner sees) is cluster_rig(local part, nodes):
    # their devices first, in node order, as the engine numbers them.
    nodes: list[RemoteNode] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)  # address -> why it could not be described
    down: dict[str, str] = field(default_factory=dict)  # a described PC that stopped answering -> why
    saved_nodes: list[str] = field(default_factory=list)  # addresses from the settings, not yet described
    _local: Rig | None = field(default=None, repr=False)  # this PC's (or the simulated rig's) own devices
    _plan: Plan | None = field(default=None, repr=False)
    _listeners: list[tuple[frozenset, Listener]] = field(default_factory=list, repr=False)
    _pending: set | None = field(default=None, repr=False)
    _parked_shares: dict[int, float] = field(default_factory=dict, repr=False)  # shares of unticked GPUs
    # The user's own split (typed, dragged, imported, saved, a tune's winner): it always wins. Without one, a new
    # model opens on the fastest plan that fits, not on the engine's default (a wall of red for a newcomer).
    split_chosen: bool = False
    # What a tune measured on this PC, per plan (measured_key): (mean tokens/s, runs). The split page shows the
    # measurement of a plan the tune ran rather than a prediction of it.
    measured: dict = field(default_factory=dict)

    def __post_init__(self):
        self._local, file_nodes = _split_rig(self.rig)
        self.nodes = self.nodes or file_nodes
        if self.nodes:
            self.rig = cluster_rig(self._local, self.nodes)
        if not self.order:
            self.order = list(range(len(self.rig.gpus)))
        if not self.included:
            self.included = set(self.order)
        if not self.shares:
            self.reset_shares()

    # --- events ---
    def on(self, topics: Iterable[str] | str, fn: Listener) -> None:
        """Call fn(changed_topics) whenever one of `topics` changes."""
        t = frozenset([topics] if isinstance(topics, str) else topics)
        unknown = t - ALL_TOPICS
        if unknown:
            raise ValueError(f"unknown topics {sorted(unknown)}")
        self._listeners.append((t, fn))

    def off(self, fn: Listener) -> None:
        # == not `is`: each `obj.method` is a new bound-method object, equal to the one given to on()
        self._listeners = [(t, f) for t, f in self._listeners if f != fn]

    def subscribe(self, fn: Callable[[], None]) -> None:
        """Call fn() on any change."""
        self.on(ALL_TOPICS, lambda _t: fn())

    @contextmanager
    def grouped(self):
        """Group several setters into one announcement."""
        outer = self._pending is not None
        if not outer:
            self._pending = set()
        try:
            yield
        finally:
            if not outer:
                topics, self._pending = self._pending, None
                if topics:
                    self._announce(topics)

    def _emit(self, *topics: str) -> None:
        t = set(topics)
        if t & _PLAN_INPUTS:
            t.add(PLAN)
            self._plan = None
        if self._pending is not None:
            self._pending |= t
        else:
            self._announce(t)

    def _announce(self, topics: set) -> None:
        ft = frozenset(topics)
        for want, fn in list(self._listeners):
            if want & ft:
                fn(ft)

    def changed(self) -> None:
        """Everything may have changed (a rig measured on a worker, a test poking fields)."""
        self._emit(*ALL_TOPICS)

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
        devs = self.devices
        split = tuple(self.shares.get(i, 0.0) for i in devs) if devs else None
        return PlanSettings(
            context=self.context, cache_type_k=self.cache_type, cache_type_v=self.cache_type,
            flash_attn=self.flash_attn, batch=self.batch, gpulayers=self.gpulayers if devs else 0, tensor_split=split,
            moecpu=self.moecpu if self.model and self.model.is_moe else 0, backend=self.backend,
            devices=tuple(devs), host=self.host, port=self.port, margin_mib=self.margin_mib,
            overrides=self.overrides if devs else (), threads=self.threads, use_mmap=self.use_mmap,
            engine_options=self.engine_options,
        )

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

    def command(self) -> LaunchCommand | None:
        p = self.plan()
        if p is None:
            return None
        path = self.model_path or f"{self.model.name}.gguf"
        return launch_command(p, self.rig, path, self.executable)

    # --- the one translation from PlanSettings to the wizard's controls ---
    def apply(self, s: PlanSettings, chosen: bool = True) -> None:
        """Set every control from PlanSettings. Devices keep the user's order for the chosen GPUs,
        left-out ones after them; a missing split starts from llama.cpp's default (free memory). chosen=False:
        auto-fit's answer, which is not the user's own split."""
        n = len(self.rig.gpus)
        if s.devices is not None:
            _checked(v.devices, s.devices, n)  # a GPU twice would be counted twice
        chosen = list(dict.fromkeys(i for i in (s.devices if s.devices is not None else range(n)) if 0 <= i < n))
        if s.tensor_split and sum(s.tensor_split) > 0:
            _checked(v.split, s.tensor_split, len(chosen))  # more values than GPUs are refused, never dropped
        with self.grouped():
            rest = [i for i in self.order if i not in chosen]
            self.order = self._engine_order(chosen + rest + [i for i in range(n) if i not in chosen + rest])
            self.included = set(chosen)
            self.locked &= self.included
            ts = [float(x) for x in (s.tensor_split or ())]
            if ts and sum(ts) > 0:
                ts = ts[:len(chosen)] + [0.0] * max(0, len(chosen) - len(ts))
                self.shares = dict(zip(chosen, ts))  # keyed by device: the engine's order does not move them
            else:
                self.reset_shares()
            self._set_gpulayers(s.gpulayers)
            self.context = max(256, int(s.context))
            self.cache_type = s.cache_type_k if s.cache_type_k in CACHE_TYPES else "f16"
            self.flash_attn, self.batch = bool(s.flash_attn), int(s.batch)
            self.margin_mib = _checked(v.mib, s.margin_mib, "The safety margin (MiB)")  # a tune's winner keeps its own
            self.moecpu = max(0, int(s.moecpu))
            self.overrides = tuple(tuple(o) for o in s.overrides)
            self.threads = None if not s.threads else _checked(v.integer, s.threads, "threads", 1, 4096)
            self.use_mmap = s.use_mmap
            self.engine_options = _checked(v.engine_options, s.engine_options)
            self.backend = s.backend if s.backend in BACKENDS else "koboldcpp"
            self.host, self.port = s.host, int(s.port)
            self.split_chosen = chosen and bool(s.tensor_split or s.gpulayers is not None)
            self._emit(DEVICES, SPLIT, CONTEXT, LAUNCH)

    # --- other PCs (RPC nodes) ---
    def _engine_order(self, order: list[int]) -> list[int]:
        """RPC devices first, in the rig's (= --rpc) order, then this PC's in the order given."""
        return sorted(i for i in order if self.rig.gpus[i].is_remote) + [i for i in order if not self.rig.gpus[i].is_remote]

    def add_node(self, node: RemoteNode) -> None:
        """Add a described PC (again: its new description replaces the old one, in place)."""
        if not node.address:
            raise SettingError("A PC needs an address such as 192.168.1.20:50052.")
        nodes = [node if n.address == node.address else n for n in self.nodes]
        if node.address not in {n.address for n in self.nodes}:
            nodes.append(node)
        self.set_nodes(nodes)

    def remove_node(self, address: str) -> None:
        self.unreachable.pop(address, None)
        self.saved_nodes = [a for a in self.saved_nodes if a != address]
        self.set_nodes([n for n in self.nodes if n.address != address])

    def set_unreachable(self, address: str, why: str) -> None:
        """A remembered or typed PC that did not answer: kept in the list (and the settings) with why."""
        self.saved_nodes = [a for a in self.saved_nodes if a != address]
        if why:
            self.unreachable[address] = why
        else:
            self.unreachable.pop(address, None)
        self._emit(RIG)

    def set_down(self, address: str, why: str) -> None:
        """A listed PC stopped answering (why), or answers again (""): the Hardware and Monitor pages say so."""
        if self.down.get(address, "") == why:
            return
        if why:
            self.down[address] = why
        else:
            self.down.pop(address, None)
        self._emit(RIG)

    def set_nodes(self, nodes: list[RemoteNode]) -> None:
        """The other PCs, in --rpc order. The user's ticks, shares and locks of devices still present are
        kept (devices move index when a PC comes or goes); a new PC's devices start ticked, with the share
        llama.cpp would give them (free memory)."""
        addresses = [n.address for n in nodes]
        if len(set(addresses)) != len(addresses):
            raise SettingError("The same PC is listed twice; each address once.")
        old = {_key(g): i for i, g in enumerate(self.rig.gpus)}
        self._local.system = self.rig.system  # measured on a worker after start
        rig = cluster_rig(self._local, nodes) if nodes else self._local
        new = [old.get(_key(g)) for g in rig.gpus]  # new index -> old index (None: a new device)
        back = {o: i for i, o in enumerate(new) if o is not None}
        with self.grouped():
            was_included = set(self.included)
            self.nodes = list(nodes)
            for a in addresses:
                self.unreachable.pop(a, None)
            self.down = {a: why for a, why in self.down.items() if a in addresses}
            self.saved_nodes = [a for a in self.saved_nodes if a not in addresses]
            self.rig = rig
            self.order = self._engine_order([back[o] for o in self.order if o in back]
                                            + [i for i, o in enumerate(new) if o is None])
            self.included = {back[o] for o in was_included if o in back} | {i for i, o in enumerate(new) if o is None}
            self.locked = {back[o] for o in self.locked if o in back}
            self._parked_shares = {back[o]: f for o, f in self._parked_shares.items() if o in back}
            kept = {back[o]: w for o, w in self.shares.items() if o in back}
            self.shares = kept
            for i, o in enumerate(new):
                if o is None:
                    self.shares[i] = self._default_share(i) if kept else 0.0
            if not kept or sum(self.shares.values()) <= 0:
                self.reset_shares()
            self.baseline = None
            self._emit(RIG, DEVICES, SPLIT)

    # --- hardware page ---
    def set_rig(self, rig: Rig, path: str | None = None) -> None:
        """A new rig for this PC's part; the other PCs added stay (a rig file listing its own nodes
        brings those instead)."""
        local, file_nodes = _split_rig(rig)
        with self.grouped():
            self._local = local
            self.nodes = file_nodes or self.nodes
            self.rig = cluster_rig(local, self.nodes) if self.nodes else local
            self.rig_path = path if rig.simulated else None
            self.order = list(range(len(self.rig.gpus)))
            self.included = set(self.order)
            self.locked.clear()
            self._parked_shares.clear()
            self.reset_shares()
            self.baseline = None
            self._emit(RIG, DEVICES, SPLIT)

    def set_included(self, gpu: int, on: bool) -> None:
        if on == (gpu in self.included):
            return
        held = {i: n for i, n in self._held().items() if i != gpu}
        if on:
            self.included.add(gpu)
            frac = self._parked_shares.pop(gpu, None)  # its fraction of the split when it was unticked
            others = sum(self.shares.get(i, 0.0) for i in self.devices if i != gpu)
            if frac and frac < 1 and others > 0:
                self.shares[gpu] = others * frac / (1 - frac)
            else:
                self.shares[gpu] = self._default_share(gpu)
        else:
            total = sum(self.shares.get(i, 0.0) for i in self.devices)
            self.included.discard(gpu)
            self.locked.discard(gpu)
            if gpu in self.shares and total > 0:
                self._parked_shares[gpu] = self.shares.pop(gpu) / total
        self._renormalise()
        self._plan = None
        self._hold_locks(held)
        self._emit(DEVICES, SPLIT)

    def move_gpu(self, gpu: int, delta: int) -> None:
        """Only this PC's devices move, among themselves: the engine puts RPC devices first, in --rpc
        order, whatever is asked."""
        i = self.order.index(gpu)
        j = max(0, min(len(self.order) - 1, i + delta))
        if any(self.rig.gpus[self.order[k]].is_remote for k in range(min(i, j), max(i, j) + 1)):
            return
        if i != j:
            self.order.insert(j, self.order.pop(i))
            self._emit(DEVICES)

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
        self.notes = list(notes)
        self._emit(NOTES)

    # --- context page ---
    @property
    def context_limit(self) -> int:
        limit = self.model.n_ctx_train if self.model and self.model.n_ctx_train else 1 << 20
        return max(256, limit // 256 * 256)

    def set_context(self, tokens: int) -> None:
        self.context = max(256, min(int(tokens) // 256 * 256, self.context_limit))
        self._emit(CONTEXT)

    def set_cache_type(self, kind: str) -> None:
        self.cache_type = _checked(v.choice, kind, "KV cache type", CACHE_TYPES)
        self._emit(CONTEXT)

    def set_flash_attn(self, on: bool) -> None:
        self.flash_attn = bool(on)
        self._emit(CONTEXT)

    def set_batch(self, tokens: int) -> None:
        self.batch = _checked(v.batch, tokens)
        self._emit(CONTEXT)

    def set_margin(self, mib: float) -> None:
        self.margin_mib = _checked(v.mib, mib, "The safety margin (MiB)")
        self._emit(CONTEXT)

    def set_threads(self, n: int | None) -> None:
        """CPU threads for the engine; None (or 0): the engine's own choice."""
        self.threads = None if not n else _checked(v.integer, n, "CPU threads", 1, 4096)
        self._emit(CONTEXT)

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
        self.moecpu = max(0, min(int(n), self.model.n_layer if self.model else 0))
        self._emit(CONTEXT)

    # --- launch page ---
    def set_backend(self, backend: str, executable: str | None = None) -> None:
        if backend not in BACKENDS:
            raise SettingError(f"Unknown backend {backend!r}.")
        self.backend, self.executable = backend, executable
        self._emit(LAUNCH)

    def set_executable(self, path: str | None) -> None:
        self.executable = path or None
        self._emit(LAUNCH)

    def set_host(self, host: str) -> None:
        self.host = _checked(v.host, (host or "").strip() or "127.0.0.1")
        self._emit(LAUNCH)

    def set_port(self, port: int) -> None:
        self.port = _checked(v.port, port)
        self._emit(LAUNCH)

    def set_objective(self, objective: str) -> None:
        if objective not in OBJECTIVES:
            raise SettingError(f"Unknown auto-fit objective {objective!r}.")
        self.objective = objective

    # --- split page ---
    def _default_share(self, gpu: int) -> float:
        """A newly ticked card's share as llama.cpp would give it: by free memory, against the others."""
        others = [i for i in self.devices if i != gpu]
        if not others:
            return SHARE_TOTAL
        total_free = sum(max(1.0, float(self.rig.gpus[i].free_bytes)) for i in others)
        mine = max(1.0, float(self.rig.gpus[gpu].free_bytes))
        return sum(self.shares.get(i, 0.0) for i in others) * mine / total_free

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
        self._emit(SPLIT)

    def percent(self, gpu: int) -> float:
        total = sum(self.shares.get(i, 0.0) for i in self.devices)
        return SHARE_TOTAL * self.shares.get(gpu, 0.0) / total if total > 0 else 0.0

    def set_share(self, gpu: int, value: float) -> float:
        """Set one GPU's share (percent); locked GPUs keep theirs, the other unlocked ones make room
        in proportion to what they had. Returns the share actually set."""
        self.split_chosen = True
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
        self._emit(SPLIT)
        return value

    def layer_counts(self) -> dict[int, int]:
        """Layers each included GPU gets under the current plan."""
        p = self.plan()
        if p is None:
            return {i: 0 for i in self.devices}
        return {d.gpu_index: d.layers for d in p.gpus}

    def set_layers(self, gpu: int, n: int) -> int:
        """Give one GPU exactly n of the offloaded layers; unlocked cards absorb the difference in
        proportion to what they hold (whole layers), locked cards keep theirs. Returns what was set."""
        self.split_chosen = True
        counts = self.layer_counts()
        if gpu not in counts or gpu in self.locked:
            return counts.get(gpu, 0)
        total = sum(counts.values())
        others = [i for i in self.devices if i != gpu and i not in self.locked]
        fixed = sum(counts[i] for i in self.devices if i in self.locked and i != gpu)
        if not others:  # every other card is locked: the card trades layers with the CPU, the locks hold
            n = max(0, min(int(n), self.max_layers - fixed))
            counts[gpu] = n
            self._set_counts(counts)
            self._emit(SPLIT)
            return n
        n = max(0, min(int(n), total - fixed))
        counts.update(zip(others, _spread(total - fixed - n, [counts[i] for i in others])))
        counts[gpu] = n
        if sum(counts.values()) == 0:
            return 0
        self.shares = {i: float(counts[i]) for i in self.devices}
        self._emit(SPLIT)
        return n

    def _set_counts(self, counts: dict[int, int]) -> None:
        """Exact layers per card: the split as whole layer counts and GPU layers as their sum (llama.cpp
        reproduces integer counts exactly)."""
        if sum(counts.values()) == 0:
            self.shares = {i: 1.0 for i in self.devices}
            self.gpulayers = 0
            return
        self.shares = {i: float(counts.get(i, 0)) for i in self.devices}
        self._set_gpulayers(sum(counts.values()))

    def _held(self) -> dict[int, int]:
        """The locked cards' layer counts now: what a change elsewhere must leave as it is."""
        if not self.locked or self.model is None:
            return {}
        counts = self.layer_counts()
        return {i: counts[i] for i in self.locked if i in counts}

    def _hold_locks(self, held: dict[int, int]) -> None:
        """Locks are a promise: after a card was ticked or unticked, or GPU layers moved, the locked cards get
        their layers back; the unlocked ones take the rest in proportion, or the CPU does when none is left."""
        held = {i: n for i, n in held.items() if i in self.included and i in self.locked}
        if not held:
            return
        now = self.layer_counts()
        if all(now.get(i) == n for i, n in held.items()):
            return
        others = [i for i in self.devices if i not in held]
        rest = max(0, sum(now.values()) - sum(held.values())) if others else 0
        counts = {**{i: 0 for i in self.devices}, **held}
        counts.update(zip(others, _spread(rest, [now.get(i, 0) for i in others])))
        self._set_counts(counts)
        self._plan = None

    def set_split_text(self, text: str) -> None:
        """A koboldcpp --tensor_split ("1.5 4.5 3") for the included GPUs in order."""
        self.split_chosen = True
        vals = parse_split(text)
        devs = self.devices
        if len(vals) > len(devs):
            raise SettingError(f"{len(vals)} split values for {len(devs)} selected GPU(s): give one per GPU.")
        vals += [0.0] * (len(devs) - len(vals))
        self.shares = dict(zip(devs, vals))
        self._emit(SPLIT)

    def _set_gpulayers(self, n: int | None) -> None:
        self.gpulayers = None if n is None or n >= self.max_layers else max(0, int(n))

    def set_gpulayers(self, n: int | None) -> None:
        self.split_chosen = True
        held = self._held()
        if held and n is not None:
            n = max(int(n), sum(held.values()))  # fewer would take layers from a locked card
        self._set_gpulayers(n)
        self._plan = None
        self._hold_locks(held)
        self._emit(SPLIT)

    def run_auto_fit(self, objective: str | None = None) -> FitResult:
        """Set the sliders to the planner's answer; the user can drag from there."""
        if objective:
            self.set_objective(objective)
        base = self.settings().with_(tensor_split=None, gpulayers=None, moecpu=0, overrides=(),
                                     devices=tuple(self.devices))
        fit = auto_fit(self.model, self.rig, base, self.objective)
        with self.grouped():
            self.apply(fit.settings, chosen=False)
            self.explanation = list(fit.plan.explanation)
            self.explained = self.settings()
        return fit

    def current_explanation(self) -> list[str]:
        """The auto-fit explanation while the user has not moved anything since."""
        return self.explanation if self.explained == self.settings() else []

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

    def to_user_settings(self, us: UserSettings) -> UserSettings:
        us.context, us.cache_type, us.flash_attn, us.batch = self.context, self.cache_type, self.flash_attn, self.batch
        us.moecpu, us.gpulayers, us.backend = self.moecpu, self.gpulayers, self.backend
        us.overrides = [list(o) for o in self.overrides]
        us.threads, us.use_mmap, us.engine_options = self.threads, self.use_mmap, dict(self.engine_options)
        us.host, us.port, us.objective = self.host, self.port, self.objective
        if self.executable:
            us.executables[self.backend] = self.executable
        if self.model_path:
            us.model_path = self.model_path
        if not self.rig.simulated:  # a simulated rig's GPUs are not this PC's: keep the real PC's split
            # this PC's devices only: other PCs are described again at the next start, and their devices
            # get their share then
            local = [i for i in self.devices if not self.rig.gpus[i].is_remote]
            # a PC without GPUs (or with every card unticked) has no split: None, never [], which is no split
            us.split = [self.shares.get(i, 0.0) for i in local] or None
            has_gpus = any(not g.is_remote for g in self.rig.gpus)
            us.devices = [self.rig.gpus[i].uuid for i in local] if has_gpus else None
            us.nodes = list(dict.fromkeys([n.address for n in self.nodes] + list(self.unreachable)
                                          + self.saved_nodes))
        return us

    def apply_user_settings(self, us: UserSettings) -> None:
        by_uuid = {g.uuid: i for i, g in enumerate(self.rig.gpus)}
        known = us.devices is not None and all(u in by_uuid for u in us.devices)
        devices = tuple(by_uuid[u] for u in us.devices) if known else None
        split = tuple(us.split) if known and us.split and len(us.split) == len(devices) else None
        s = PlanSettings(context=us.context, cache_type_k=us.cache_type, cache_type_v=us.cache_type,
                         flash_attn=us.flash_attn, batch=us.batch, gpulayers=us.gpulayers, tensor_split=split,
                         moecpu=us.moecpu, backend=us.backend, devices=devices, host=us.host, port=us.port,
                         overrides=tuple(tuple(o) for o in us.overrides), threads=us.threads, use_mmap=us.use_mmap,
                         engine_options=tuple(us.engine_options.items()))
        with self.grouped():
            self.apply(s)
            self.saved_nodes = [a for a in us.nodes if a not in {n.address for n in self.nodes}]
            self.objective = us.objective if us.objective in OBJECTIVES else "fastest"
            self.executable = us.executables.get(self.backend)


def _spread(n: int, weights: list[float]) -> list[int]:
    """n whole layers over cards in proportion to weights (equal when all are 0), largest remainders first."""
    if not weights:
        return []
    w = weights if sum(weights) > 0 else [1] * len(weights)
    raw = [n * x / sum(w) for x in w]
    out = [int(r) for r in raw]
    for k in sorted(range(len(out)), key=lambda k: -(raw[k] - out[k]))[: n - sum(out)]:
        out[k] += 1
    return out


def measured_key(plan: Plan, rig: Rig) -> tuple:
    """What makes two plans the same run for the engine: the model, where each layer goes (by device identity),
    and the settings that change the speed; not the margin, host or port."""
    s = plan.settings
    where = tuple((None if d.gpu_index is None else _key(rig.gpus[d.gpu_index]), d.first_layer, d.layers)
                  for d in plan.devices if d.layers)
    return (plan.model_name, where, plan.context, s.cache_type_k, s.cache_type_v, s.flash_attn, s.batch, s.threads,
            s.moecpu, tuple(s.overrides), s.split_mode, s.lowvram, s.backend, s.parallel)


def _key(g) -> tuple:
    """A device's identity across rigs: its PC and its own id there (indices shift as PCs come and go)."""
    return (g.node, g.uuid or g.index, g.index)


def _split_rig(rig: Rig) -> tuple[Rig, list[RemoteNode]]:
    """(the rig without its RPC devices, the nodes it lists): a rig file may describe a whole cluster."""
    nodes = nodes_of(rig)
    if not nodes and not any(g.is_remote for g in rig.gpus):
        return rig, []
    suffix = f" + {', '.join(n.name for n in nodes)}"
    name = rig.name[: -len(suffix)] if nodes and rig.name.endswith(suffix) else rig.name
    extra = {k: x for k, x in rig.extra.items() if k != "nodes"}
    return replace(rig, name=name, gpus=[g for g in rig.gpus if not g.is_remote], extra=extra), nodes
