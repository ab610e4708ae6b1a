"""One launch from start to stop as a state machine: the only launch path (CLI and wizard).

    idle -> preflight -> starting -> loading -> ready <-> benchmarking
    loading/ready/benchmarking -> stopping -> stopped
    any check or exit -> failed(reason);  loading (out of memory, auto-retry) or failed -> retrying -> preflight

poll() never blocks: the HTTP readiness probe and the benchmark run on one worker thread that the machine
owns, and their results are applied by the next poll() on the caller's thread. The server process is
started on the thread that calls start()/poll()/retry() (the GUI or main thread), because on Linux the
kernel kills the child when the thread that started it ends (PR_SET_PDEATHSIG, see process.py).
Listeners hear every transition as callback(old, new, info) on that same thread.
"""

from __future__ import annotations

import collections
import enum
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..engines.base import Engine
from ..hardware.rig import Rig
from ..model.info import ModelInfo
from ..planner import Plan, make_plan
from .bench import BenchResult, record, run_benchmark
from .diagnose import Failure
from .launch import Launch, LaunchOutcome, smaller_plan
from .processes.process import LogFolderError
from .processes.states import IllegalTransition, Machine


class State(str, enum.Enum):
    IDLE = "idle"
    PREFLIGHT = "preflight"
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    BENCHMARKING = "benchmarking"
    RETRYING = "retrying"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


S = State
ALLOWED: dict[State, set[State]] = {
    S.IDLE: {S.PREFLIGHT},
    # stopping from the states a start passes through: Ctrl-C or SIGTERM (KeyboardInterrupt) can land in the
    # middle of one, and stop() must then still end whatever was started
    S.PREFLIGHT: {S.STARTING, S.FAILED, S.STOPPING},
    S.STARTING: {S.LOADING, S.FAILED, S.STOPPING},
    S.LOADING: {S.READY, S.RETRYING, S.FAILED, S.STOPPING},
    S.READY: {S.BENCHMARKING, S.FAILED, S.STOPPING},
    S.BENCHMARKING: {S.READY, S.FAILED, S.STOPPING},
    S.RETRYING: {S.PREFLIGHT, S.FAILED, S.STOPPING},
    S.FAILED: {S.RETRYING},
    S.STOPPING: {S.STOPPED},
    S.STOPPED: set(),
}
CANCELLED = "Loading was cancelled."
PROBE_EVERY_S = 0.1
PENDING_LINES = 5000  # server lines waiting for the next poll(); more are dropped (the log file keeps them)


@dataclass(frozen=True)
class Benchmarked:
    """How the last benchmark ended: its result, or why it failed."""
    result: BenchResult | None
    error: str | None = None


class _PendingLines:
    """Server lines on their way from the reader thread to poll(). A server can print far faster than
    a window can show: then the oldest waiting lines are dropped and one line says how many."""

    def __init__(self, limit: int = PENDING_LINES):
        self.limit = limit
        self._q: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._dropped = 0

    def put(self, line: str) -> None:
        with self._lock:
            if len(self._q) >= self.limit:
                self._q.popleft()
                self._dropped += 1
            self._q.append(line)

    def take(self, n: int) -> list[str]:
        with self._lock:
            batch = [self._q.popleft() for _ in range(min(n, len(self._q)))]
            dropped, self._dropped = self._dropped, 0
        if dropped:
            batch.insert(0, f"[phoenix: {dropped} lines of server output skipped here; the log file has them]")
        return batch

    def __len__(self) -> int:
        return len(self._q)


class _Worker:
    """One daemon thread running the machine's slow calls one at a time. A call that hangs (a server
    that stopped answering) cannot keep Phoenix from exiting."""

    def __init__(self, results: "queue.SimpleQueue"):
        self.jobs: "queue.SimpleQueue" = queue.SimpleQueue()
        self.results = results
        self.thread = threading.Thread(target=self._run, name="phoenix-launch", daemon=True)
        self.thread.start()

    def submit(self, key: tuple, fn: Callable[[], object]) -> None:
        self.jobs.put((key, fn))

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            key, fn = job
            try:
                self.results.put((key, fn(), None))
            except Exception as e:  # noqa: BLE001 - handed to poll(), which decides
                self.results.put((key, None, e))

    def close(self) -> None:
        self.jobs.put(None)


class LaunchMachine(Machine):
    ALLOWED = ALLOWED

    def __init__(self, plan: Plan, rig: Rig, model: ModelInfo, model_path: str, exe: str | None = None, *,
                 auto_retry: bool = False, attempts: int = 3, timeout: float = 1800.0,
                 log_dir: Path | None = None, backend: Engine | None = None):
        self.rig, self.model, self.model_path, self.exe = rig, model, model_path, exe
        self.auto_retry, self.attempts, self.timeout = auto_retry, max(1, attempts), timeout
        self.log_dir, self._backend = log_dir, backend
        super().__init__(State.IDLE)
        self.attempt = 0  # 0 for the first plan, +1 per smaller plan
        self.failure: Failure | None = None
        self.outcome: LaunchOutcome | None = None  # set when ready or failed
        self.benchmarked: Benchmarked | None = None  # set when a benchmark ends (benchmarking -> ready)
        self._line_listeners: list[Callable[[list[str]], None]] = []
        self._lines = _PendingLines()
        self._results: "queue.SimpleQueue" = queue.SimpleQueue()
        self._worker: _Worker | None = None
        self._pending: tuple | None = None  # the worker job whose result the machine waits for
        self._seq = 0
        self._last_probe = 0.0
        # created now so that a caller (or a test) can look at the command before start()
        self.launch = self._new_launch(plan)

    # --- observers (on_transition: Machine's) ---
    def on_lines(self, cb: Callable[[list[str]], None]) -> None:
        """New output lines of the server, delivered by poll() on the caller's thread."""
        self._line_listeners.append(cb)

    @property
    def done(self) -> bool:
        return self.state in (State.STOPPED, State.FAILED)

    @property
    def running(self) -> bool:
        """The server process is alive (loading, ready, benchmarking)."""
        p = self.launch.process
        return p is not None and p.poll() is None

    @property
    def plan(self) -> Plan:
        return self.launch.plan

    def loading_progress(self) -> tuple[float, str]:
        """Seconds since the process started and its last meaningful output line."""
        p = self.launch.process
        if p is None:
            return 0.0, ""
        last = next((ln for ln in reversed(list(p.lines)) if ln.strip() and set(ln.strip()) != {"."}), "")
        return time.monotonic() - p.started_at, last

    # --- commands ---
    def start(self) -> None:
        """Preflight and start the first plan. Call from a long-lived thread (see the module docstring)."""
        if self.state is not State.IDLE:
            raise IllegalTransition(f"start() in state {self.state.value}")
        self._begin()

    def poll(self) -> State:
        """Advance the machine; returns quickly (no network wait on this thread)."""
        self._deliver_lines()
        self._apply_results()
        if self.state is State.LOADING:
            self._poll_loading()
        elif self.state in (State.READY, State.BENCHMARKING):
            f = self.launch.check_alive()
            if f:
                self._deliver_lines()
                self.launch.stop(2)  # closes the log, kills leftover children
                self._fail(f)
        return self.state

    def benchmark(self, n_prompt: int = 512, n_gen: int = 128, repeats: int = 1) -> None:
        """Run the built-in benchmark on the worker; its result arrives with benchmarking -> ready, in
        `benchmarked` (and in the transition's info for listeners)."""
        la = self.launch
        self.benchmarked = None
        times = f" ({repeats} times)" if repeats > 1 else ""
        self._to(State.BENCHMARKING, n_prompt=n_prompt, n_gen=n_gen, repeats=repeats,
                 message=f"Benchmarking: {n_prompt} prompt tokens, then {n_gen} generated{times}…")
        self._submit("bench", lambda: run_benchmark(la.backend, la.host, la.port, la.plan, self.model, self.rig,
                                                    n_prompt, n_gen, repeats))

    def retry(self) -> bool:
        """After an out-of-memory failure: launch a smaller plan. False when there is nothing to retry."""
        if self.state is not State.FAILED or not self.failure or not self.failure.is_oom:
            return False
        return self._retry(self.failure)

    def stop(self) -> None:
        """Stop the server (or cancel its load). Nothing is left running afterwards."""
        if self.state in (State.IDLE, State.STOPPED, State.STOPPING):
            return
        if self.state is State.FAILED:  # the process is gone already; close what is left
            self.launch.stop(2)
            self._close_worker()
            return
        loading = self.state in (State.LOADING, State.PREFLIGHT, State.STARTING, State.RETRYING)
        msg = CANCELLED if loading else "Server stopped."
        self._to(State.STOPPING, message="Stopping the server…")
        self._pending = None
        self.launch.stop()
        self._deliver_lines()
        if loading:
            self.failure = Failure("cancelled", CANCELLED)
            self.outcome = LaunchOutcome(False, failure=self.failure, log_path=self.launch.log_path)
        self._close_worker()
        self._to(State.STOPPED, message=msg)

    cancel = stop

    # --- internals ---
    def _new_launch(self, plan: Plan) -> Launch:
        return Launch(plan, self.rig, self.model, self.model_path, self.exe, backend=self._backend,
                      on_line=self._lines.put, log_dir=self.log_dir)

    def _begin(self) -> None:
        la = self.launch
        self.failure = self.outcome = None
        self._to(State.PREFLIGHT, attempt=self.attempt, plan=la.plan)
        f = la.preflight()
        if f:
            self._fail(f)
            return
        self._to(State.STARTING, argv=la.command.argv)
        try:
            la.start()
        except LogFolderError as e:  # Phoenix's own folder is at fault, not the engine
            self._fail(Failure("input", str(e)))
            return
        except (OSError, ValueError) as e:  # ValueError: a NUL in an argument, should preflight miss one
            self._fail(Failure("model", f"The program {la.exe} could not be started "
                                        f"({getattr(e, 'strerror', None) or e})."))
            return
        self._last_probe = 0.0
        self._to(State.LOADING, pid=la.process.pid,
                 message=f"Loading {self.model.name} in {la.backend.name}…")

    def _poll_loading(self) -> None:
        la = self.launch
        code = la.process.poll()
        if code is not None:
            la.process.wait_output()
            self._deliver_lines()
            f = la.failed(code, during_load=True)
            la.stop(2)  # closes the log, kills leftover children
            if f.is_oom and self.auto_retry and self.attempt + 1 < self.attempts:
                self._retry(f)
            else:
                self._fail(f)
            return
        waited = time.monotonic() - la.process.started_at
        if waited > self.timeout:
            la.stop()
            self._fail(Failure("crash", f"The server did not answer within {self.timeout:.0f} s."))
            return
        now = time.monotonic()
        if self._pending is None and now - self._last_probe >= PROBE_EVERY_S:
            self._last_probe = now
            self._submit("probe", lambda: la.backend.is_ready(la.host, la.port))

    def _retry(self, f: Failure) -> bool:
        la = self.launch
        nxt = smaller_plan(self.model, self.rig, la.plan.settings, la.plan, f)
        split = " ".join(f"{x:g}" for x in (nxt.tensor_split or ())) if nxt else ""
        self._to(State.RETRYING, failure=f, settings=nxt, attempt=self.attempt + 1,
                 message=(f"Retrying with a smaller plan: {nxt.gpulayers} GPU layers, split {split}" if nxt
                          else f.message))
        if nxt is None:
            self._fail(f, message=f.message + " No smaller plan is left to try.")
            return False
        self.attempt += 1
        self.launch = self._new_launch(make_plan(self.model, self.rig, nxt))
        self._begin()
        return self.state is State.LOADING

    def _fail(self, f: Failure, message: str | None = None) -> None:
        self.failure = f
        self.outcome = LaunchOutcome(False, failure=f, log_path=self.launch.log_path)
        self._pending = None
        self._close_worker()
        self._to(State.FAILED, failure=f, message=message or f.message)

    def _submit(self, kind: str, fn: Callable[[], object]) -> None:
        if self._worker is None:
            self._worker = _Worker(self._results)
        self._seq += 1
        self._pending = (kind, self.attempt, self._seq)
        self._worker.submit(self._pending, fn)

    def _close_worker(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def _apply_results(self) -> None:
        while True:
            try:
                key, result, error = self._results.get_nowait()
            except queue.Empty:
                return
            if key != self._pending:
                continue  # an answer for an attempt or a state that is over
            self._pending = None
            if key[0] == "probe" and self.state is State.LOADING and result is True:
                self._deliver_lines()
                out = self.launch.ready()
                self.outcome = out
                la = self.launch
                self._to(State.READY, outcome=out,
                         message=f"Ready in {out.ready_s:.1f} s at http://{la.host}:{la.port}")
            elif key[0] == "bench" and self.state is State.BENCHMARKING:
                if error is not None:
                    self.benchmarked = Benchmarked(None, str(error))
                    self._to(State.READY, error=str(error), message=f"The benchmark failed ({error}).")
                else:
                    record(result)
                    r = result
                    self.benchmarked = Benchmarked(r)
                    self._to(State.READY, result=r,
                             message=f"Benchmark: prompt {r.prompt_tokens_per_s:.1f} tokens/s, generation "
                                     f"{r.gen_tokens_per_s:.1f} tokens/s (predicted {r.predicted_tokens_per_s:.1f})")

    def _deliver_lines(self) -> None:
        batch = self._lines.take(PENDING_LINES)
        if batch:
            for cb in list(self._line_listeners):
                cb(batch)
