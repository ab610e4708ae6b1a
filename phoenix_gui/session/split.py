"""The split page's editing of the wizard's session: ticking and ordering cards, shares, locks and layer
counts. A mixin of WizardState (session/state.py), which owns the fields these methods write."""

from __future__ import annotations

from ..planner.autofit import FitResult, auto_fit
from .devices import spread
from .events import DEVICES, SPLIT, SettingError, announced_once, checked
from .. import validate as v

SHARE_TOTAL = 100.0


def parse_split(text: str) -> list[float]:
    """koboldcpp's --tensor_split text ("1.5 4.5 3", commas allowed) -> weights."""
    parts = text.replace(",", " ").split()
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise SettingError("A split is numbers separated by spaces, like 1.5 4.5 3.") from None
    return list(checked(v.split, vals))


class SplitEditing:
    @announced_once
    def set_included(self, gpu: int, on: bool) -> None:
        if on == (gpu in self.included):
            return
        held = {i: n for i, n in self._held().items() if i != gpu}
        if on:
            self.included = self.included | {gpu}
            frac = self._parked.pop(self._ids[gpu], None)  # its fraction of the split when it was unticked
            others = sum(self.shares.get(i, 0.0) for i in self.devices if i != gpu)
            share = others * frac / (1 - frac) if frac and frac < 1 and others > 0 else self._default_share(gpu)
            self.shares = {**self.shares, gpu: share}
        else:
            total = sum(self.shares.get(i, 0.0) for i in self.devices)
            self.included = self.included - {gpu}
            self.locked = self.locked - {gpu}
            if gpu in self.shares and total > 0:
                self._parked[self._ids[gpu]] = self.shares[gpu] / total
                self.shares = {i: w for i, w in self.shares.items() if i != gpu}
        self._renormalise()
        self._plan = None
        self._hold_locks(held)
        self._emit(DEVICES, SPLIT)

    @announced_once
    def move_gpu(self, gpu: int, delta: int) -> None:
        """Only this PC's devices move, among themselves: the engine puts RPC devices first, in --rpc
        order, whatever is asked."""
        i = self.order.index(gpu)
        j = max(0, min(len(self.order) - 1, i + delta))
        if any(self.rig.gpus[self.order[k]].is_remote for k in range(min(i, j), max(i, j) + 1)):
            return
        if i != j:
            order = self.order
            order.insert(j, order.pop(i))
            self.order = order

    def _default_share(self, gpu: int) -> float:
        """A newly ticked card's share as llama.cpp would give it: by free memory, against the others."""
        others = [i for i in self.devices if i != gpu]
        if not others:
            return SHARE_TOTAL
        total_free = sum(max(1.0, float(self.rig.gpus[i].free_bytes)) for i in others)
        mine = max(1.0, float(self.rig.gpus[gpu].free_bytes))
        return sum(self.shares.get(i, 0.0) for i in others) * mine / total_free

    @announced_once
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

    @announced_once
    def set_locked(self, gpu: int, locked: bool) -> None:
        self.locked = self.locked | {gpu} if locked else self.locked - {gpu}
        self._emit(SPLIT)

    def percent(self, gpu: int) -> float:
        total = sum(self.shares.get(i, 0.0) for i in self.devices)
        return SHARE_TOTAL * self.shares.get(gpu, 0.0) / total if total > 0 else 0.0

    @announced_once
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
        shares = dict(self.shares)
        for i in others:
            shares[i] = rest * (shares[i] / before if before > 0 else 1.0 / len(others))
        shares[gpu] = value
        self.shares = shares
        self._emit(SPLIT)
        return value

    def layer_counts(self) -> dict[int, int]:
        """Layers each included GPU gets under the current plan."""
        p = self.plan()
        if p is None:
            return {i: 0 for i in self.devices}
        return {d.gpu_index: d.layers for d in p.gpus}

    @announced_once
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
        counts.update(zip(others, spread(total - fixed - n, [counts[i] for i in others])))
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
        counts.update(zip(others, spread(rest, [now.get(i, 0) for i in others])))
        self._set_counts(counts)
        self._plan = None

    @announced_once
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

    @announced_once
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
