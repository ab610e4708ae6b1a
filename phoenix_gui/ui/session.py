"""The running server as the GUI sees it: a thin Qt adapter over backends.lifecycle.LaunchMachine.
A QTimer on the GUI thread calls poll(); the machine's transitions come back as Qt signals for the
pages. The monitor (graphs) runs while the server is ready."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from ..backends.bench import BenchResult
from ..backends.diagnose import Failure
from ..backends.launch import Launch, LaunchOutcome
from ..backends.lifecycle import LaunchMachine, State
from ..monitor import Monitor, NvmlSampler, ProcessSampler, ThroughputSampler
from ..session import WizardState


class ServerSession(QObject):
    status = Signal(str)  # one line for the status bar
    starting = Signal()  # a new launch (not a retry): pages clear the previous run
    ready = Signal(object)  # LaunchOutcome
    failed = Signal(object)  # Failure
    stopped = Signal()
    lines = Signal(list)  # new log lines
    benchmarked = Signal(object)  # BenchResult
    transition = Signal(object, object, dict)  # old State, new State, info

    def __init__(self, state: WizardState, nvml=None, hz: float = 1.0):
        super().__init__()
        self.state = state
        self.nvml = nvml
        self.hz = hz
        self.machine: LaunchMachine | None = None
        self.monitor: Monitor | None = None
        self._bench_done: Callable[[BenchResult], None] | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(100)
        self._timer.timeout.connect(self._tick)
        self._ticks = 0

    @property
    def launch(self) -> Launch | None:
        return self.machine.launch if self.machine else None

    @property
    def outcome(self) -> LaunchOutcome | None:
        """None while loading; the ready or failed outcome after that."""
        m = self.machine
        if m is None or m.state is State.STOPPED:
            return None
        return m.outcome

    @property
    def running(self) -> bool:
        """A server process is alive: the window asks before closing."""
        return self.machine is not None and self.machine.running

    def can_launch(self) -> str:
        """Empty when a launch is possible, else why not (one sentence)."""
        return self.state.launch_blocker() or ("A server is already running." if self.running else "")

    def start(self, auto_retry: bool = False, attempts: int = 3) -> Failure | None:
        """On the GUI thread: the child lives as long as the thread that started it."""
        if self.machine is not None:
            self.machine.stop()
        self._stop_monitor()
        st = self.state
        m = self.machine = LaunchMachine(st.plan(), st.rig, st.model, st.model_path, st.executable,
                                         auto_retry=auto_retry, attempts=attempts)
        m.on_lines(self.lines.emit)
        m.on_transition(self._changed)
        self.starting.emit()
        m.start()
        if m.state is State.FAILED:
            return m.failure
        self._timer.start()
        return None

    def _changed(self, old: State, new: State, info: dict) -> None:
        m = self.machine
        if m is None:
            return
        if new is State.RETRYING and info.get("settings") is not None:
            self.state.apply(info["settings"])  # the sliders show the plan being tried
        if info.get("message"):
            self.status.emit(info["message"])
        self.transition.emit(old, new, info)
        if new is State.READY and old is not State.BENCHMARKING:
            self._start_monitor()
            self.ready.emit(info["outcome"])
        elif new is State.READY and old is State.BENCHMARKING and info.get("result") is not None:
            self.benchmarked.emit(info["result"])
            done, self._bench_done = self._bench_done, None
            if done:
                done(info["result"])
        elif new is State.FAILED:
            self._stop_monitor()
            self._timer.stop()
            self.failed.emit(info["failure"])
        elif new is State.LOADING:
            self._timer.start()
        elif new is State.STOPPED:
            self.stopped.emit()

    def _tick(self) -> None:
        m = self.machine
        if m is None:
            return
        m.poll()
        self._ticks += 1
        if m.state is State.LOADING and self._ticks % 10 == 0:  # once a second while loading
            waited, last = m.loading_progress()
            self.status.emit(f"Loading {self.state.model.name} in {m.launch.backend.name}… {waited:.0f} s"
                             + (f" — {last[:100]}" if last else ""))

    def cancel(self) -> None:
        self.stop()

    def retry_smaller(self) -> bool:
        """After an out-of-memory: a smaller plan (layers moved off the failing GPU), shown on the sliders,
        launched again."""
        if self.machine is None:
            return False
        return self.machine.retry()

    def benchmark(self, n_prompt: int = 512, n_gen: int = 128, done: Callable[[BenchResult], None] | None = None) -> None:
        m = self.machine
        if m is None or m.state is not State.READY:
            return
        self._bench_done = done
        m.benchmark(n_prompt, n_gen)

    def _start_monitor(self) -> None:
        la = self.launch
        # another PC's device cannot be read by this PC's NVML (its memory comes from its share endpoint)
        gpus = [(la.rig.gpus[d.gpu_index].uuid, d.name) for d in la.plan.gpus if not la.rig.gpus[d.gpu_index].is_remote]
        samplers = [ProcessSampler(la.process.pid), ThroughputSampler(la.backend, la.host, la.port)]
        if gpus and (not la.rig.simulated or self.nvml is not None):
            samplers.insert(0, NvmlSampler(gpus, nvml=self.nvml))
        self.monitor = Monitor(samplers, self.hz).start()

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
        """Stop the server or cancel its load; also how Phoenix closes (nothing keeps running)."""
        self._stop_monitor()
        self._timer.stop()
        if self.machine is not None:
            self.machine.stop()
            self.machine.poll()  # deliver the last lines
