"""Launch a plan, wait until the server answers, compare predicted and actual buffers, diagnose
failures and propose a smaller plan after an out-of-memory."""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..hardware.rig import MIB, Rig
from ..model.info import ModelInfo
from ..planner import Plan, PlanSettings, make_plan
from .diagnose import Failure, classify
from .logparse import BufferReport, parse_log
from .process import ServerProcess
from .servers import ServerBackend, backend_for


def port_free(host: str, port: int) -> bool:
    h = "127.0.0.1" if host in ("", "0.0.0.0") else host
    fam = socket.AF_INET6 if ":" in h else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        if os.name != "nt":
            # as the servers do: connections in TIME_WAIT do not block a new listener
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((h, port))
        except OSError:
            return False
    return True


def data_dir() -> Path:
    env = os.environ.get("PHOENIX_DATA_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("phoenix", appauthor=False))


@dataclass
class DeviceComparison:
    name: str
    predicted_bytes: int
    actual_bytes: int | None  # None: the engine printed nothing for it (e.g. no -lv 4)


@dataclass
class LaunchOutcome:
    ok: bool
    ready_s: float | None = None
    failure: Failure | None = None
    report: BufferReport | None = None
    comparison: list[DeviceComparison] = field(default_factory=list)
    log_path: Path | None = None


def compare(plan: Plan, report: BufferReport) -> list[DeviceComparison]:
    """Predicted vs logged per device (weights + KV + compute; overheads are not in the engine's log)."""
    out = []
    for i, d in enumerate(plan.gpus):
        key = f"gpu{i}"
        actual = sum(report.mib(key, k) for k in ("model", "KV", "compute")) if key in report.devices() else None
        out.append(DeviceComparison(d.name, d.weights_bytes + d.kv_bytes + d.compute_bytes,
                                    int(actual * MIB) if actual is not None else None))
    cpu = plan.cpu
    actual = sum(report.mib("cpu", k) for k in ("model", "KV", "compute", "output")) if "cpu" in report.devices() else None
    out.append(DeviceComparison(cpu.name, cpu.weights_bytes + cpu.kv_bytes + cpu.compute_bytes,
                                int(actual * MIB) if actual is not None else None))
    return out


def record_calibration(plan: Plan, comparison: list[DeviceComparison], model: ModelInfo, backend: str) -> None:
    """Keep predicted/actual pairs: they calibrate later plans."""
    try:
        d = data_dir()
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "calibration.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": time.time(), "model": model.name, "arch": model.architecture, "backend": backend,
                                "context": plan.context, "devices": [c.__dict__ for c in comparison]}) + "\n")
    except OSError:
        pass


def smaller_plan(model: ModelInfo, rig: Rig, settings: PlanSettings, plan: Plan, failure: Failure,
                 margin_mib: float = 256.0) -> PlanSettings | None:
    """Move layers off the failing device (its shortfall plus a margin), to GPUs with room if the
    plan says they fit, otherwise back to the CPU. None when nothing is left to move."""
    counts = [d.layers for d in plan.gpus]
    if not counts or sum(counts) == 0:
        return None
    dev = failure.device if failure.device is not None and failure.device < len(counts) else None
    if dev is None:  # unknown device: the tightest one
        dev = min(range(len(counts)), key=lambda i: plan.gpus[i].headroom_bytes)
    per_layer = max(1, plan.gpus[dev].weights_bytes // max(1, plan.gpus[dev].layers))
    need = (failure.requested_mib or 0) * MIB + margin_mib * MIB
    k = max(1, math.ceil(need / per_layer))
    k = min(k, counts[dev])
    trial = counts[:]
    trial[dev] -= k
    order = sorted((i for i in range(len(counts)) if i != dev), key=lambda i: -plan.gpus[i].headroom_bytes)
    for _ in range(k):
        placed = False
        for i in order:
            t2 = trial[:]
            t2[i] += 1
            s2 = settings.with_(gpulayers=sum(t2), tensor_split=tuple(float(c) for c in t2))
            p2 = make_plan(model, rig, s2)
            if all(g.fits for j, g in enumerate(p2.gpus) if j != dev):
                trial, placed = t2, True
                break
        if not placed:
            break
    if sum(trial) == 0:
        return settings.with_(gpulayers=0, tensor_split=None)
    return settings.with_(gpulayers=sum(trial), tensor_split=tuple(float(c) for c in trial))


class Launch:
    """One launch of one plan. start() on a long-lived thread; wait_ready() may run on a worker."""

    def __init__(self, plan: Plan, rig: Rig, model: ModelInfo, model_path: str, exe: str | None = None,
                 backend: ServerBackend | None = None, on_line: Callable[[str], None] | None = None,
                 log_dir: Path | None = None, verbose_buffers: bool = True):
        self.plan, self.rig, self.model, self.model_path = plan, rig, model, model_path
        self.settings: PlanSettings = plan.settings
        self.backend = backend or backend_for(self.settings.backend)
        self.exe = exe or self.backend.find()
        self.on_line = on_line
        self.cancel = threading.Event()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = (log_dir or data_dir() / "logs") / f"{self.backend.name}-{stamp}-{os.getpid()}.log"
        self.command = self.backend.command(plan, rig, model_path, self.exe)
        if verbose_buffers and self.backend.name == "llama-server":
            self.command.argv += ["-lv", "4"]  # the per-device buffer lines are printed at verbosity 4
        self.process: ServerProcess | None = None
        self.outcome: LaunchOutcome | None = None

    @property
    def host(self) -> str:
        return self.settings.host

    @property
    def port(self) -> int:
        return self.settings.port

    def preflight(self) -> Failure | None:
        if not self.exe:
            return Failure("model", f"No {self.backend.name} program was found; choose its executable.")
        if os.sep in self.exe and not Path(self.exe).exists():
            return Failure("model", f"The program {self.exe} does not exist.")
        if self.model_path and not Path(self.model_path).exists():
            return Failure("model", f"The model file {self.model_path} does not exist.")
        if not port_free(self.host, self.port):
            return Failure("port", f"Port {self.port} is already in use by another program; choose another port.")
        return None

    def start(self) -> Failure | None:
        f = self.preflight()
        if f:
            self.outcome = LaunchOutcome(False, failure=f)
            return f
        self.process = ServerProcess(self.command.argv, self.command.env, self.log_path, self.on_line).start()
        return None

    def wait_ready(self, timeout: float = 1800.0, progress: Callable[[float], None] | None = None) -> LaunchOutcome:
        """Ready when the HTTP API answers, not when a log line appears. Cancellable."""
        assert self.process is not None
        t0 = self.process.started_at
        while True:
            code = self.process.poll()
            if code is not None:
                self.process.wait_output()
                return self._failed(code, during_load=True)
            if self.backend.is_ready(self.host, self.port):
                break
            if self.cancel.is_set():
                self.stop()
                self.outcome = LaunchOutcome(False, failure=Failure("crash", "Loading was cancelled."),
                                             log_path=self.log_path)
                return self.outcome
            if time.monotonic() - t0 > timeout:
                self.stop()
                self.outcome = LaunchOutcome(False, failure=Failure("crash", f"The server did not answer within {timeout:.0f} s."),
                                             log_path=self.log_path)
                return self.outcome
            if progress:
                progress(time.monotonic() - t0)
            time.sleep(0.1)
        ready_s = time.monotonic() - t0
        report = parse_log("\n".join(self.process.lines))
        comp = compare(self.plan, report)
        if any(c.actual_bytes is not None for c in comp):
            record_calibration(self.plan, comp, self.model, self.backend.name)
        self.outcome = LaunchOutcome(True, ready_s, None, report, comp, self.log_path)
        return self.outcome

    def _failed(self, code: int, during_load: bool) -> LaunchOutcome:
        names = [d.name for d in self.plan.gpus]
        f = classify(list(self.process.lines), code, during_load, self.port, names)
        self.outcome = LaunchOutcome(False, failure=f, log_path=self.log_path)
        return self.outcome

    def check_alive(self) -> Failure | None:
        """After ready: None while running, else why it stopped."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is None:
            return None
        self.process.wait_output()
        return self._failed(code, during_load=False).failure

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        return self.process.stop(timeout, graceful=lambda: self.backend.graceful_stop(self.host, self.port))


def launch_with_retries(model: ModelInfo, rig: Rig, settings: PlanSettings, model_path: str, exe: str | None = None,
                        attempts: int = 3, on_line=None, on_attempt=None, timeout: float = 1800.0,
                        log_dir: Path | None = None) -> tuple[Launch, LaunchOutcome]:
    """Launch; after an out-of-memory, retry with a smaller plan, at most `attempts` times in all."""
    s = settings
    for n in range(max(1, attempts)):
        plan = make_plan(model, rig, s)
        la = Launch(plan, rig, model, model_path, exe, on_line=on_line, log_dir=log_dir)
        if on_attempt:
            on_attempt(n, plan, la)
        if la.start():
            return la, la.outcome
        out = la.wait_ready(timeout)
        if out.ok or not out.failure or not out.failure.is_oom or n == attempts - 1:
            return la, out
        nxt = smaller_plan(model, rig, s, plan, out.failure)
        if nxt is None:
            return la, out
        s = nxt
    return la, out
