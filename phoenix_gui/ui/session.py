"""The running server as the GUI sees it: one Launch, its Monitor, and Qt timers that move data
from the worker threads onto the GUI thread."""

from __future__ import annotations

import queue
from typing import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from ..backends.bench import BenchResult, record, run_benchmark
from ..backends.diagnose import Failure
from ..backends.launch import Launch, LaunchOutcome, smaller_plan
from ..monitor import Monitor, NvmlSampler, ProcessSampler, ThroughputSampler
from .state import WizardState
from .worker import run_in_thread


class ServerSession(QObject):
    status = Signal(str)  # one line for the status bar
    ready = Signal(object)  # LaunchOutcome
    failed = Signal(object)  # Failure
    stopped = Signal()
    lines = Signal(list)  # new log lines
    benchmarked = Signal(object)  # BenchResult

    def __init__(self, state: WizardState, nvml=None, hz: float = 1.0):
        super().__init__()
        self.state = state
        self.nvml = nvml
        self.hz = hz
        self.launch: Launch | None = None
        self.monitor: Monitor | None = None
        self.outcome: LaunchOutcome | None = None
        self.auto_retry = False
        self.attempts_left = 0
        self._queue: "queue.SimpleQueue[str]" = queue.SimpleQueue()
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._pump)

    @property
    def running(self) -> bool:
        return self.launch is not None and self.launch.process is not None and self.launch.process.poll() is None

    def can_launch(self) -> str:
        """Empty when a launch is possible, else why not (one sentence)."""
        st = self.state
        if st.model is None:
            return "Choose a model first."
        if not st.model_path:
            return "The demo model is a preset without a file: choose a real .gguf to launch."
        if self.running:
            return "A server is already running."
        return ""

    def start(self, auto_retry: bool = False, attempts: int = 3) -> Failure | None:
        st = self.state
        self.auto_retry, self.attempts_left = auto_retry, max(0, attempts - 1)
        plan = st.plan()
        self.launch = Launch(plan, st.rig, st.model, st.model_path, st.executable, on_line=self._queue.put)
        f = self.launch.start()  # on the GUI thread: the child lives as long as this thread
        if f:
            self.failed.emit(f)
            return f
        self._timer.start()
        self.status.emit(f"Loading {st.model.name} in {self.launch.backend.name}…")
        la = self.launch
        run_in_thread(lambda: la.wait_ready(), lambda out: self._loaded(la, out),
                      lambda e: self._loaded(la, LaunchOutcome(False, failure=Failure("crash", f"Launch failed ({e})."))))
        return None

    def cancel(self) -> None:
        if self.launch:
            self.launch.cancel.set()

    def _loaded(self, la: Launch, out: LaunchOutcome) -> None:
        if la is not self.launch:
            return
        self.outcome = out
        if out.ok:
            self._start_monitor()
            self.status.emit(f"Ready in {out.ready_s:.1f} s at http://{la.host}:{la.port}")
            self.ready.emit(out)
            return
        f = out.failure
        self.status.emit(f.message)
        if f.is_oom and self.auto_retry and self.attempts_left > 0 and self.retry_smaller():
            return
        self.failed.emit(f)

    def retry_smaller(self) -> bool:
        """Apply a smaller plan (layers moved off the failing GPU) to the sliders and launch again."""
        if not self.launch or not self.outcome or not self.outcome.failure:
            return False
        st = self.state
        nxt = smaller_plan(st.model, st.rig, st.settings(), self.launch.plan, self.outcome.failure)
        if nxt is None:
            return False
        self.attempts_left -= 1
        st.shares = {i: float(c) for i, c in zip(st.devices, nxt.tensor_split or ())} or st.shares
        st.gpulayers = nxt.gpulayers if nxt.gpulayers is not None and nxt.gpulayers < st.max_layers else None
        st.changed()
        self.launch.stop(2)
        self.status.emit(f"Retrying with a smaller plan: {nxt.gpulayers} GPU layers, split "
                         f"{' '.join(f'{x:g}' for x in (nxt.tensor_split or ()))}")
        return self.start(self.auto_retry, self.attempts_left + 1) is None

    def _start_monitor(self) -> None:
        la = self.launch
        gpus = [(la.rig.gpus[d.gpu_index].uuid, d.name) for d in la.plan.gpus]
        samplers = [ProcessSampler(la.process.pid), ThroughputSampler(la.backend, la.host, la.port)]
        if gpus and not la.rig.simulated:
            samplers.insert(0, NvmlSampler(gpus, nvml=self.nvml))
        elif gpus and self.nvml is not None:
            samplers.insert(0, NvmlSampler(gpus, nvml=self.nvml))
        self.monitor = Monitor(samplers, self.hz).start()

    def _pump(self) -> None:
        batch = []
        try:
            while len(batch) < 2000:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        if batch:
            self.lines.emit(batch)
        la = self.launch
        if la and la.process and self.outcome is None and la.process.poll() is None and not la.cancel.is_set():
            import time as _t

            waited = _t.monotonic() - la.process.started_at
            if int(waited * 10) % 10 == 0:  # once a second while loading
                last = next((ln for ln in reversed(la.process.lines) if ln.strip() and set(ln.strip()) != {"."}), "")
                self.status.emit(f"Loading {self.state.model.name} in {la.backend.name}… {waited:.0f} s"
                                 + (f" — {last[:100]}" if last else ""))
        if self.launch and self.outcome and self.outcome.ok:
            f = self.launch.check_alive()
            if f:
                self.outcome = None
                self._stop_monitor()
                self.status.emit(f.message)
                self.failed.emit(f)

    def benchmark(self, n_prompt: int = 512, n_gen: int = 128, done: Callable[[BenchResult], None] | None = None) -> None:
        la = self.launch
        if not self.running or not (self.outcome and self.outcome.ok):
            return
        st = self.state
        self.status.emit(f"Benchmarking: {n_prompt} prompt tokens, then {n_gen} generated…")

        def finished(res: BenchResult):
            record(res)
            self.status.emit(f"Benchmark: prompt {res.prompt_tokens_per_s:.1f} tokens/s, generation "
                             f"{res.gen_tokens_per_s:.1f} tokens/s (predicted {res.predicted_tokens_per_s:.1f})")
            self.benchmarked.emit(res)
            if done:
                done(res)

        run_in_thread(lambda: run_benchmark(la.backend, la.host, la.port, la.plan, st.model, st.rig, n_prompt, n_gen),
                      finished, lambda e: self.status.emit(f"The benchmark failed ({e})."))

    def _stop_monitor(self) -> None:
        if self.monitor:
            self.monitor.stop()

    def set_rate(self, hz: float) -> None:
        """Sampling rate for the next and the running monitor (0.5-10 Hz)."""
        self.hz = max(0.5, min(10.0, hz))
        if self.monitor and self.running:
            samplers = self.monitor.samplers
            self.monitor.stop_thread()
            old = self.monitor
            self.monitor = Monitor(samplers, self.hz)
            self.monitor.series = old.series if old.hz == self.hz else self.monitor.series
            self.monitor.start()

    def stop(self) -> None:
        self._stop_monitor()
        if self.launch:
            self.launch.cancel.set()
            self.launch.stop()
        self._timer.stop()
        self._pump()
        self.outcome = None
        self.status.emit("Server stopped.")
        self.stopped.emit()
