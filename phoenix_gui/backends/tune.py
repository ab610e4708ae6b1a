"""Tune on this PC: measure candidate plans with the real engine, learn the rig, keep the fastest.

A Tuner is driven like the launch machine: start(), then poll() from the same thread until done (the
CLI's loop, the wizard's QTimer); poll() never blocks. Every run goes through LaunchMachine: launch,
wait until ready, the fixed benchmark, stop. An out-of-memory is data: the card's budget shrinks
(planner/recovery.py) and the remaining candidates are checked against it. After the candidates the
calibration is fitted (planner/tuning.py), auto-fit re-runs with it, and its winner is measured once
more. cancel() stops at once and leaves no process.

Phoenix's safety margin is a guess made before anything was measured, so the candidates are planned
without it (never past a card's free memory): a load that fails costs seconds and teaches the true
budget. The recommendation keeps a margin sized from what was measured (planner/recovery.py
measured_margin) or the one the user set, and is chosen only among plans that keep it.

Before the first run the model file is read once (only its data, not a sparse file's holes), so that
every run, the first included, loads it from the OS file cache: both engines read through it (llama-server
maps the file; koboldcpp 1.115.1 reads it without direct I/O, and its --usemmap is left as the user has
it, because with it on koboldcpp skips repacking the CPU's weights and would run the CPU layers slower
than the user's own launch). A file the RAM cannot hold is not read: it would only evict itself.

The calibration is saved in the data folder (backends/calibrations.py), keyed by the GPUs' UUIDs, the
driver and the engine and its version.
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..hardware.rig import MIB, Rig
from ..model.errors import ModelFileError
from ..model.info import ModelInfo, read_model
from ..model.slice import slice_info, write_slice
from ..planner import PlanSettings, make_plan
from ..hardware.calibration import Calibration
from ..planner.calibration import NOISE, Fit, memory_corrections, memory_spread, with_calibration
from ..planner.budgets import Budgets
from ..planner.recovery import MARGIN_FLOOR_MIB, PROBE_MARGIN_MIB, fits, learn, measured_margin
from ..planner.tuning import RUN_GEN as N_GEN
from ..planner.tuning import RUN_PROMPT as N_PROMPT
from ..planner.tuning import RUN_REPEATS as N_REPEATS
from ..planner.tuning import NOISE_FLOOR
from ..planner.tuning import (calibrated_best, candidates, disagreement, features, keep, learned_fit,
                              measured_noise, pin_down, slice_limit, slice_runs, with_counts)
from ..storage import remove_leftovers
from .tune_report import fit_notes
from .bench import spread_of
from .calibrations import CalibrationFileError, rig_key, save
from .file_warmer import FileWarmer
from .lifecycle import LaunchMachine, State
from .processes.states import Machine

FIRST_RUN_GUESS_S = 30.0  # time-left estimate before any run has finished
SLICE_PREFIX = "phoenix-slices-"  # + the tuning process's id: a folder whose process is gone is a leftover
_SLICE_DIR = re.compile(re.escape(SLICE_PREFIX) + r"([0-9]+)(?:-|$)")


# --- the tuner ---

class TuneState(str, enum.Enum):
    IDLE = "idle"
    RUNNING = "running"  # reading the model file, or measuring one plan after another
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


T = TuneState
ALLOWED: dict[TuneState, set[TuneState]] = {
    T.IDLE: {T.RUNNING, T.CANCELLED},
    T.RUNNING: {T.DONE, T.CANCELLED, T.FAILED},
    T.DONE: set(),
    T.CANCELLED: set(),
    T.FAILED: set(),
}


def remove_stale_slices(tmp: str | Path | None = None) -> list[Path]:
    """Remove the slice folders of tunes that died without cleaning up (killed with SIGKILL, a power cut):
    one named for a process that no longer exists, owned by this user (storage.remove_leftovers).
    Returns what was removed."""
    return remove_leftovers(tmp or tempfile.gettempdir(), _SLICE_DIR)


@dataclass
class TuneRun:
    label: str
    settings: PlanSettings
    predicted_tps: float  # the speed model's, before tuning
    measured_tps: float | None = None  # the mean of the repeats
    repeats: list[float] = field(default_factory=list)  # tokens/s of each repeat of the benchmark
    calibrated_tps: float | None = None  # after tuning, for the table
    outcome: str = ""  # "ok", "out of memory", or the failure
    seconds: float = 0.0
    load_s: float | None = None  # launch until the API answered (the engine's load)
    past_margin: bool = False  # eats into the margin Phoenix keeps before measuring (a probe)
    devices: list[tuple[str, int, int | None]] = field(default_factory=list)  # name, predicted, logged bytes
    # a slice run (model/slice.py): the slice's model and file, and how many layers the whole model has
    model: ModelInfo | None = None
    model_path: str | None = None
    of_layers: int = 0

    @property
    def split(self) -> str:
        if self.model is None:
            return describe_plan(self.settings)
        where = "the CPU" if not self.settings.devices else f"GPU {self.settings.devices[0]}"
        return f"first {self.model.n_layer} of {self.of_layers} layers alone on {where}"

    @property
    def spread(self) -> float | None:
        return spread_of(self.repeats)


def describe_plan(s: PlanSettings) -> str:
    """'29 layers 20:9 on GPUs 1,2' or 'CPU only, 4 threads, batch 256, ctx 2048'."""
    cpu = f"{s.threads} thread{'s' if s.threads > 1 else ''}, " if s.threads else ""
    tail = (f"batch {s.batch}, " if s.batch != 512 else "") + f"ctx {s.context}"
    if s.gpulayers == 0 or s.devices == ():
        return f"CPU only, {cpu}{tail}"
    layers = "all layers" if s.gpulayers is None else f"{s.gpulayers} layers"
    split = ":".join(f"{x:g}" for x in s.tensor_split) if s.tensor_split else "by free memory"
    gpus = "all GPUs" if s.devices is None else "GPU" + ("s " if len(s.devices) > 1 else " ") + ",".join(map(str, s.devices))
    return f"{layers} {split} on {gpus}"


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _ram_available() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no figure: do not read a file that may not fit
        return 0


class Tuner(Machine):
    ALLOWED = ALLOWED

    def __init__(self, model: ModelInfo, rig: Rig, model_path: str, base: PlanSettings, exe: str | None, *,
                 budget_s: float = 300.0, max_runs: int = 6, n_prompt: int = N_PROMPT, n_gen: int = N_GEN,
                 n_repeats: int = N_REPEATS,
                 load_timeout: float = 600.0, version: str = "unknown", yours: PlanSettings | None = None,
                 margin_mib: float | None = None, warm: bool = True):
        self.model, self.model_path, self.exe = model, model_path, exe
        self.rig = with_calibration(rig, None)  # tuning measures against the bare speed model
        self.base, self.yours = base, yours
        # candidates eat into the margin (a probe); the recommendation keeps one sized from the runs
        self.guess_margin = float(base.margin_mib)
        self.user_margin = None if margin_mib is None else float(margin_mib)
        self.probe = base.with_(margin_mib=PROBE_MARGIN_MIB)
        self.margin_mib = self.user_margin if self.user_margin is not None else self.guess_margin
        self.margin_source = "yours" if self.user_margin is not None else "guess"  # then "measured"
        self.margin_note = ""
        self.warm = warm
        self.warmer: FileWarmer | None = None
        self.budget_s, self.max_runs = float(budget_s), max(2, int(max_runs))
        self.n_prompt, self.n_gen, self.load_timeout, self.version = n_prompt, n_gen, load_timeout, version
        self.n_repeats = max(1, int(n_repeats))
        self.noise: float | None = None  # measured: the relative noise of one run's mean speed
        self.runs: list[TuneRun] = []
        self.queue: list[TuneRun] = []
        self.budgets = Budgets()
        super().__init__(TuneState.IDLE)
        self.calibration: Calibration | None = None
        self.winner: TuneRun | None = None
        self._m: LaunchMachine | None = None
        self._cur: TuneRun | None = None
        self._t0 = self._run_t0 = 0.0
        self._final_queued = False
        self._slice_dir: Path | None = None
        self.slice_note = ""  # why there are no slice runs, when a model file could not be sliced
        self.on_run = None  # callback(TuneRun) after each run
        self.fit: Fit | None = None  # the last fit: its shared terms and what it held at the prior
        self.pinned: dict[str, TuneRun | None] = {}  # a held term -> the run chosen to pin it down (None: none)
        self.disagreement = ""  # the fit ranked a measured plan first that measured slower than the kept one
        self._mem_spread = 0.0

    # --- commands ---
    def start(self) -> None:
        remove_stale_slices()
        self._t0 = time.monotonic()
        self._to(TuneState.RUNNING)
        first = candidates(self.model, self.rig, self.probe, self.budgets, limit=1)
        if not first:
            self._finish(TuneState.FAILED, "No candidate plan fits this PC, so there is nothing to measure.")
            return
        slices = self._slices(first[0])
        plans = candidates(self.model, self.rig, self.probe, self.budgets, limit=self.max_runs - 1 - len(slices),
                           taught=[(r.model, r.settings) for r in slices])
        self.queue = [TuneRun("predicted best", plans[0], self._predict(plans[0]))] + slices + \
            [TuneRun("", s, self._predict(s)) for s in plans[1:]]
        yours = None if self.yours is None else self.yours.with_(margin_mib=PROBE_MARGIN_MIB)
        if yours is not None and self._fits(yours) and not any(self._same(r.settings, yours) for r in self.queue):
            self.queue.insert(1, TuneRun("your config", yours, self._predict(yours)))
            del self.queue[self.max_runs - 1:]
        for i, r in enumerate(self.queue):
            r.label = r.label or f"candidate {i + 1}"
        self.message = f"Tuning: {len(self.queue)} plans to measure, then the calibrated winner."
        if self.warm and 0 < _file_size(self.model_path) < 0.8 * _ram_available():
            self.warmer = FileWarmer(self.model_path, guess_s=FIRST_RUN_GUESS_S)
            self.message = "Reading the model file once, so that every run loads it from the OS file cache…"
            return
        self._next()

    def poll(self) -> bool:
        """Advance; True while tuning goes on."""
        if self.state is not TuneState.RUNNING:
            return False
        m = self._m
        if m is None:
            if self.warmer is not None and not self.warmer.done:
                return True
            self._next()
            return self.state is TuneState.RUNNING
        st = m.poll()
        if st is State.READY and self._cur.measured_tps is None and not self._cur.outcome:
            done = m.benchmarked  # handed over by benchmarking -> ready; None: not benchmarked yet
            if done is None:
                self._cur.devices = [(c.name, c.predicted_bytes, c.actual_bytes) for c in m.outcome.comparison]
                self._cur.load_s = m.outcome.ready_s
                m.benchmark(self.n_prompt, self.n_gen, self.n_repeats)
            else:
                res = done.result
                if res:
                    self._cur.repeats = list(res.gen_repeats)
                self._end_run("ok" if res else f"the benchmark failed ({done.error})",
                              res.gen_tokens_per_s if res else None)
        elif st is State.FAILED:
            f = m.failure
            if f is not None and f.is_oom:
                _, self.budgets = learn(self.rig, m.plan, f.device, f.requested_mib, self.budgets)
                self.queue = self._replan()
                self._end_run("out of memory", None)
            elif not any(r.outcome == "ok" for r in self.runs):
                # nothing measured yet and the engine does not start: no next run is launched to be stopped
                self._end_run(f.message if f else "failed", None, go_on=False)
                self._finish(TuneState.FAILED, f.message if f else "The engine did not start.")
                return False
            else:
                self._end_run(f.message if f else "failed", None)
        elif not m.done and time.monotonic() - self._t0 > self.budget_s + 5 and self._cur.label != "calibrated winner":
            self._end_run("stopped at the time budget", None)
        return self.state is TuneState.RUNNING

    def cancel(self) -> None:
        """Stop now; nothing is left running."""
        if self.warmer is not None:
            self.warmer.stop()
        if self._m is not None:
            self._m.stop()
            self._m = None
        if self.state in (TuneState.RUNNING, TuneState.IDLE):
            self._finish(TuneState.CANCELLED, "Tuning was cancelled; nothing is left running.")

    # --- progress ---
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0 if self._t0 else 0.0

    def time_left(self) -> float:
        done = [r.seconds for r in self.runs if r.seconds > 0]
        per = sum(done) / len(done) if done else FIRST_RUN_GUESS_S
        cur = time.monotonic() - self._run_t0 if self._m is not None else 0.0
        todo = len(self.queue) + (0 if self._final_queued else 1) + (1 if self._m is not None else 0)
        warm = self.warmer.time_left() if self.warmer is not None else 0.0
        return max(0.0, min(self.budget_s - self.elapsed, warm + todo * per - min(cur, per)))

    def fraction(self) -> float:
        if self.state is not TuneState.RUNNING:
            return 1.0
        left = self.time_left()
        return self.elapsed / max(1e-6, self.elapsed + left)

    # --- internals ---
    def _slices(self, best: PlanSettings) -> list[TuneRun]:
        """The slice runs (planner/tuning.slice_runs), their files written beside each other in a folder
        of their own that the tune removes when it ends. None for a model without a file, or when the
        files cannot be written (said in slice_note; the tune goes on with whole-model runs)."""
        if not self.model.parts:
            return []
        picked = slice_runs(self.model, self.rig, self.probe, best, self.budgets, limit=slice_limit(self.max_runs))
        if not picked:
            return []
        out, files = [], {}
        try:
            self._slice_dir = Path(tempfile.mkdtemp(prefix=f"{SLICE_PREFIX}{os.getpid()}-"))
            for r in picked:
                if r.layers not in files:
                    need = r.model.file_size
                    if os.name == "nt" and shutil.disk_usage(self._slice_dir).free < 2 * need:
                        raise OSError("not enough free disk space for the slice files")  # NTFS reserves them
                    path = write_slice(self.model, r.layers, self._slice_dir / f"first-{r.layers}-layers.gguf")
                    files[r.layers] = (path, read_model(path))
                path, m = files[r.layers]
                name = "the CPU" if r.gpu is None else self.rig.gpus[r.gpu].short_name
                out.append(TuneRun(f"slice on {name}", r.settings, self._predict(r.settings, m), model=m,
                                   model_path=str(path), of_layers=self.model.n_layer))
        except (OSError, ValueError, ModelFileError) as e:
            self.slice_note = f"No slice runs: the model's first layers could not be written to a file ({e})."
            self._remove_slices()
            return []
        return out

    def _remove_slices(self) -> None:
        if self._slice_dir is not None:
            shutil.rmtree(self._slice_dir, ignore_errors=True)
            self._slice_dir = None

    def _predict(self, s: PlanSettings, model: ModelInfo | None = None) -> float:
        return make_plan(model or self.model, self.rig, s).predicted_tokens_per_s

    def _past_margin(self, s: PlanSettings, model: ModelInfo | None = None) -> bool:
        """Does this plan eat into the margin Phoenix keeps before anything is measured?"""
        return any(d.state != "fits" for d in make_plan(model or self.model, self.rig,
                                                        s.with_(margin_mib=self.guess_margin)).gpus)

    def keeps_margin(self, s: PlanSettings) -> bool:
        """Fits with the recommendation's margin on the calibrated rig (the measured extra memory on
        each card included), within what failures showed: what the wizard and `phoenix plan` will say."""
        rig = with_calibration(self.rig, self.calibration)
        p = make_plan(self.model, rig, s.with_(margin_mib=self.margin_mib))
        return p.fits and fits(rig, p, self.budgets)

    def recommended(self) -> PlanSettings | None:
        """The winner as the user should run it: its plan with the recommendation's margin."""
        return None if self.winner is None else self.winner.settings.with_(margin_mib=self.margin_mib)

    def _keepable(self, s: PlanSettings) -> bool:
        """The context is the user's: a run at a smaller one teaches the CPU's cost but is never kept."""
        return s.context == self.base.context

    def _fits(self, s: PlanSettings, model: ModelInfo | None = None) -> bool:
        p = make_plan(model or self.model, self.rig, s)
        return p.fits and fits(self.rig, p, self.budgets)

    @staticmethod
    def _same(a: PlanSettings, b: PlanSettings) -> bool:
        return (a.devices, a.gpulayers, a.tensor_split, a.threads, a.batch, a.context) == \
            (b.devices, b.gpulayers, b.tensor_split, b.threads, b.batch, b.context)

    def _replan(self) -> list[TuneRun]:
        """After an out-of-memory: the slice runs still queued that fit the card's smaller budget, then the
        candidates again, less what ran."""
        slices = [r for r in self.queue if r.model is not None and self._fits(r.settings, r.model)]
        left = self.max_runs - 2 - len(self.runs) - len(slices)
        ok = [r for r in self.runs if r.outcome == "ok"]  # what they taught counts in the design
        fresh = candidates(self.model, self.rig, self.probe, self.budgets, limit=self.max_runs,
                           done=[r.settings for r in ok if r.model is None],
                           taught=[(r.model, r.settings) for r in ok if r.model is not None])
        fresh = [s for s in fresh if not any(self._same(s, r.settings) for r in self.runs)][:max(0, left)]
        return slices + [TuneRun("predicted best" if i == 0 and not any(r.outcome == "ok" for r in self.runs)
                                 else f"candidate {len(self.runs) + len(slices) + i + 2}", s, self._predict(s))
                         for i, s in enumerate(fresh)]

    def _per_run_s(self) -> float:
        done = [r.seconds for r in self.runs if r.seconds > 0]
        return sum(done) / len(done) if done else 0.0

    def _next(self) -> None:
        spare = self.budget_s - self.elapsed
        per = self._per_run_s()
        designed = not self.queue or self.queue[0].label.startswith("candidate")
        if (not self._final_queued and designed and self.runs and spare > 2 * per
                and len(self.runs) < self.max_runs - 1 and (pin := self._pin_run()) is not None):
            # a fit on a bound: the run that pins it down takes the place of the next designed candidate
            if self.queue:
                self.queue.pop(0)
            self._launch(pin)
            return
        # keep room for the final check of the winner
        if self.queue and (not self.runs or spare > 2 * per) and len(self.runs) < self.max_runs - 1:
            self._launch(self.queue.pop(0))
            return
        if not self._final_queued:
            self._final_queued = True
            self.queue = []
            w = self._learn_and_pick()
            if w is not None and (not self.runs or spare > per) and len(self.runs) < self.max_runs:
                self._launch(TuneRun("calibrated winner", w, self._predict(w)))
                return
        self._conclude()

    def _launch(self, run: TuneRun) -> None:
        self._cur, self._run_t0 = run, time.monotonic()
        model = run.model or self.model
        plan = make_plan(model, self.rig, run.settings)
        run.past_margin = self._past_margin(run.settings, model)
        self._m = LaunchMachine(plan, self.rig, model, run.model_path or self.model_path, self.exe,
                                timeout=self.load_timeout)
        self.message = f"Run {len(self.runs) + 1}: {run.label} — {run.split}"
        self._m.start()

    def _end_run(self, outcome: str, tps: float | None, go_on: bool = True) -> None:
        run, m = self._cur, self._m
        run.outcome, run.measured_tps, run.seconds = outcome, tps, time.monotonic() - self._run_t0
        if m is not None:
            m.stop()
        self._m = self._cur = None
        self.runs.append(run)
        if self.on_run:
            self.on_run(run)
        if go_on:
            self._next()

    def measured(self) -> list[tuple[PlanSettings, float]]:
        """The whole model's measured plans (the slice runs apart: see measured_slices)."""
        return [(r.settings, r.measured_tps) for r in self.runs if r.outcome == "ok" and r.measured_tps and r.model is None]

    def measured_slices(self) -> list[tuple[ModelInfo, PlanSettings, float]]:
        return [(r.model, r.settings, r.measured_tps) for r in self.runs
                if r.outcome == "ok" and r.measured_tps and r.model is not None]

    def _pin_run(self) -> TuneRun | None:
        """When the fit so far holds a factor at the prior (it lay on a bound), the run that would pin it
        down (planner/tuning.pin_down), once per factor; None when the fit is sound or no such run fits."""
        data, slices = self.measured(), self.measured_slices()
        if not data and not slices:
            return None
        noise = measured_noise([r.repeats for r in self.runs if r.outcome == "ok"]) or NOISE
        f = learned_fit(self.model, self.rig, data, noise=noise, slices=slices)
        for term, _, _ in f.held:
            if term in self.pinned:
                continue
            s = pin_down(self.model, self.rig, self.probe, self.budgets, term,
                         done=[r.settings for r in self.runs if r.model is None])
            self.pinned[term] = None if s is None else TuneRun("pins the fit down", s, self._predict(s))
            if s is not None:
                return self.pinned[term]
        return None

    def _learn_and_pick(self) -> PlanSettings | None:
        data = self.measured()
        if not data and not self.measured_slices():
            return None
        self.calibration = self._calibrate(data)
        self._size_margin()
        cal_rig = with_calibration(self.rig, self.calibration)
        best = calibrated_best(self.model, cal_rig, self.base.with_(margin_mib=self.margin_mib), self.budgets)
        if best is None and data:  # CPU-only: what was measured fastest
            best = keep(self.model, self.rig, [(s, t) for s, t in data if self._keepable(s)])
        return best

    def _size_margin(self) -> None:
        """The recommendation's margin: the user's, else sized from the measured buffers, else the guess."""
        if not self.rig.gpus:
            self.margin_note = ""
            return
        got = measured_margin(self.calibration, self._mem_spread)
        seen = f" (measured: {got[0]:.0f} MiB)" if got else ""
        if self.user_margin is not None:
            self.margin_mib, self.margin_source = self.user_margin, "yours"
            self.margin_note = f"{self.margin_mib:.0f} MiB kept free per GPU, as you set it{seen}."
        elif got:
            self.margin_mib, self.margin_source = got[0], "measured"
            what = (f"the engine needed at most {got[1]:.0f} MiB more than the plan on a GPU, which the calibration "
                    "adds to that card's plans (once)" if got[1] > 0
                    else "the engine never needed more than the plan on a GPU")
            self.margin_note = (f"{self.margin_mib:.0f} MiB kept free per GPU, sized from what was measured: {what}; "
                                f"the margin covers only noise and drift (a card's excess varied by at most "
                                f"{self._mem_spread:.0f} MiB between loads; at least {MARGIN_FLOOR_MIB:.0f} MiB) "
                                f"(Phoenix's guess before measuring: {self.guess_margin:.0f} MiB).")
        else:
            self.margin_mib, self.margin_source = self.guess_margin, "guess"
            self.margin_note = (f"{self.margin_mib:.0f} MiB kept free per GPU, Phoenix's guess: the engine logged no "
                                "GPU buffers to measure it from.")

    def _calibrate(self, data) -> Calibration:
        self.noise = measured_noise([r.repeats for r in self.runs if r.outcome == "ok"])
        self.fit = learned_fit(self.model, self.rig, data, noise=self.noise or NOISE, slices=self.measured_slices())
        cal = self.fit.cal
        pairs = []
        for r in self.runs:
            if r.outcome != "ok":
                continue
            p = make_plan(r.model or self.model, self.rig, r.settings)
            for d, (_, pred, act) in zip(p.gpus, r.devices):
                if act is not None:
                    pairs.append((self.rig.gpus[d.gpu_index].uuid, pred, act))
        cal.mem_extra_mib = memory_corrections(pairs, [g.uuid for g in self.rig.gpus])
        self._mem_spread = memory_spread(pairs)
        cal.key = rig_key(self.rig, self.base.backend, self.version)
        cal.model = self.model.name
        return cal

    def _conclude(self) -> None:
        data = self.measured()
        if not data and not self.measured_slices():
            self._finish(TuneState.FAILED, "No run finished, so nothing was learned.")
            return
        self.calibration = self._calibrate(data)
        self.calibration.per_layer_ms = self._per_layer_ms()
        self._size_margin()
        cal_rig = with_calibration(self.rig, self.calibration)
        for r in self.runs:
            r.calibrated_tps = make_plan(r.model or self.model, cal_rig, r.settings).predicted_tokens_per_s
        try:
            save(self.calibration)
            kept = ""
        except CalibrationFileError as e:  # a full disk or a read-only data folder: the tune's result still stands
            kept = f" {e} It was not kept for later plans."
        if not data:
            self.winner = None
            self._finish(TuneState.DONE, "Learned this PC from the slice runs, but no plan of the whole model finished, "
                                 "so none is kept." + kept)
            return
        self._finish(TuneState.DONE, self._choose() + kept)

    def _choose(self) -> str:
        """Set the winner among the measured plans and say what was kept. A probe that ate into the
        margin taught the budget; only a plan that keeps the recommendation's margin is kept."""
        safe = [(s, t) for s, t in self.measured() if self.keeps_margin(s) and self._keepable(s)]
        if not safe:
            self.winner = None
            return (f"Learned this PC, but no measured plan keeps {self.margin_mib:.0f} MiB free per GPU; "
                    "tune again with more runs, or set a smaller margin.")
        kept = keep(self.model, self.rig, safe)
        ok = [r for r in self.runs if r.outcome == "ok" and r.measured_tps and self.keeps_margin(r.settings)
              and self._keepable(r.settings) and r.model is None]
        self.winner = next((r for r in reversed(ok) if self._same(r.settings, kept)), max(ok, key=lambda r: r.measured_tps))
        mean = sum(t for s, t in safe if self._same(s, kept)) / sum(1 for s, _ in safe if self._same(s, kept))
        self.disagreement = ""
        got = disagreement(self.model, self.rig, safe, self.calibration, kept, self.noise or NOISE)
        if got is not None:
            s, predicted, measured = got
            self.disagreement = (f"The fit and the measurements disagree: the fit ranks {describe_plan(s)} first "
                                 f"({predicted:.2f} tokens/s calibrated), but it measured {measured:.2f}, slower than "
                                 f"{self.winner.split} at {mean:.2f}; the measurement wins.")
        return f"Kept: {self.winner.split} at {mean:.1f} tokens/s (measured)."

    def set_margin(self, mib: float | None) -> None:
        """The user's margin for the recommendation (None: sized from what was measured). During a tune it
        applies to the calibrated winner still to come; after it, the winner is chosen again among the
        measured plans."""
        self.user_margin = None if mib is None else float(mib)
        if self.calibration is not None:
            self._size_margin()
        else:
            self.margin_mib = self.user_margin if self.user_margin is not None else self.guess_margin
            self.margin_source = "yours" if self.user_margin is not None else "guess"
        if self.state is TuneState.DONE:
            self.message = self._choose()

    def _per_layer_ms(self) -> dict[str, float]:
        """Time per repeating layer of this model on each device a run used, as learned: the speed model's
        time of the model's first 8 layers alone on the device less that of its first layer alone (the
        output layer and the fixed costs cancel), over 7, times the device's learned factor."""
        k = min(8, self.model.n_layer)
        small, big = slice_info(self.model, 1), slice_info(self.model, k)
        base = self.base.with_(context=min(self.base.context, 512))

        def per_layer(i: int | None, scale: float) -> float:
            def t(m):
                s = base.with_(devices=(), gpulayers=0, tensor_split=None) if i is None else with_counts(base, {i: m.n_layer + 1})
                return features(m, self.rig, s).times[-1 if i is None else i]
            return round(1000 * (t(big) - t(small)) / max(1, k - 1) * scale, 4)

        # only the devices some run put layers on: another's factor is the speed model's, not a measurement
        runs = [make_plan(r.model or self.model, self.rig, r.settings) for r in self.runs if r.outcome == "ok"]
        out = {g.short_name: per_layer(i, self.calibration.scale_for(g.uuid)) for i, g in enumerate(self.rig.gpus)
               if any(d.gpu_index == i and d.layers for p in runs for d in p.gpus)}
        if any(p.cpu.layers for p in runs):
            out["CPU"] = per_layer(None, self.calibration.cpu_scale)
        return out

    def _finish(self, state: TuneState, message: str) -> None:
        if self.warmer is not None and not self.warmer.done:
            self.warmer.stop()
        if self._m is not None:
            self._m.stop()
            self._m = None
        self._remove_slices()
        self._to(state, message=message)

    # --- the report ---
    def speedups(self) -> list[str]:
        """'x times faster than ...' lines, both sides measured; a ratio inside two runs' noise (the rule the fit's
        disagreement uses) is called within noise: no real difference was measured."""
        if self.winner is None or not self.winner.measured_tps:
            return []
        out = []
        noise = max(self.noise if self.noise is not None else NOISE, NOISE_FLOOR)
        for label, name in (("predicted best", "the predicted best"), ("your config", "your config")):
            r = next((r for r in self.runs if r.label == label and r.outcome == "ok" and r.measured_tps), None)
            if r is not None:
                ratio = self.winner.measured_tps / r.measured_tps
                line = (f"{ratio:.2f} times as fast as {name} "
                        f"({self.winner.measured_tps:.1f} vs {r.measured_tps:.1f} tokens/s, both measured)")
                if abs(ratio - 1) <= 2 * noise:
                    line += f": within noise ({noise:.0%} per run), no real difference"
                out.append(line)
        return out

    def table(self) -> list[str]:
        times = f", {self.n_repeats} times on each load (measured: their mean; spread: their standard deviation)" \
            if self.n_repeats > 1 else ""
        lines = [f"Benchmark of every run: {self.n_prompt} prompt tokens, then {self.n_gen} generated tokens{times}.",
                 f"{'#':>2}  {'run':<22} {'plan':<46} {'predicted':>9} {'calibrated':>10} {'measured':>8} {'spread':>6} "
                 f"{'load s':>6}  outcome"]
        for i, r in enumerate(self.runs, 1):
            fmt = lambda x: f"{x:.2f}" if x else "—"  # noqa: E731
            load = f"{r.load_s:.1f}" if r.load_s is not None else "—"
            spread = f"{r.spread:.1%}" if r.spread is not None else "—"
            mark = "*" if r.past_margin else " "
            lines.append(f"{i:>2}  {r.label:<22} {r.split[:45]:<45}{mark} {fmt(r.predicted_tps):>9} {fmt(r.calibrated_tps):>10} "
                         f"{fmt(r.measured_tps):>8} {spread:>6} {load:>6}  {r.outcome} ({r.seconds:.1f} s)")
        lines += self.notes()
        if self.warmer is not None and self.warmer.seconds:
            lines.append(f"The model file was read once before the first run ({self.warmer.data_bytes / MIB:,.0f} MiB of "
                         f"data in {self.warmer.seconds:.1f} s), so every run loaded it from the OS file cache.")
        if self.margin_note:
            lines.append("Margin: " + self.margin_note)
        return lines

    def notes(self) -> list[str]:
        """What the table's marks and words mean for this tune (the CLI prints them, the Tune panel shows them)."""
        out = []
        if any(r.model is not None for r in self.runs):
            out.append("A slice run loads only the model's first layers (and its embeddings and output) onto one device, "
                       "so nearly all of a token's time is that device's: it measures the device's time per layer.")
        if self.slice_note:
            out.append(self.slice_note)
        if self.noise is not None:
            out.append(f"Noise of one run's measured speed: {self.noise:.2%} (the repeats' spread, pooled over the runs); "
                       "the fit weighs the runs by it.")
        out += fit_notes(self)
        if any(r.past_margin for r in self.runs):
            out.append(f"* a probe: eats into the {self.guess_margin:.0f} MiB Phoenix keeps free per GPU before measuring "
                       "(never past a card's free memory).")
        return out

    def report(self) -> dict:
        c = self.calibration
        return {"state": self.state.value, "message": self.message, "n_prompt": self.n_prompt, "n_gen": self.n_gen,
                "n_repeats": self.n_repeats, "noise": self.noise,
                "runs": [{"label": r.label, "plan": r.split, "devices": r.settings.devices, "gpulayers": r.settings.gpulayers,
                          "tensor_split": r.settings.tensor_split, "threads": r.settings.threads, "batch": r.settings.batch,
                          "context": r.settings.context, "predicted_tps": r.predicted_tps,
                          "calibrated_tps": r.calibrated_tps, "measured_tps": r.measured_tps,
                          "repeats_tps": r.repeats, "spread": r.spread, "outcome": r.outcome,
                          "seconds": round(r.seconds, 2), "load_s": None if r.load_s is None else round(r.load_s, 2),
                          "past_margin": r.past_margin,
                          "slice_layers": None if r.model is None else r.model.n_layer,
                          "devices_mib": [{"name": n, "predicted": round(p / MIB), "actual": None if a is None else round(a / MIB)}
                                          for n, p, a in r.devices]} for r in self.runs],
                "winner": None if self.winner is None else self.winner.label, "speedups": self.speedups(),
                "margin_mib": self.margin_mib, "margin_source": self.margin_source, "margin": self.margin_note,
                "guess_margin_mib": self.guess_margin, "disagreement": self.disagreement, "fit": fit_notes(self),
                "warm_s": None if self.warmer is None else round(self.warmer.seconds, 2),
                "calibration": None if c is None else c.to_dict()}
