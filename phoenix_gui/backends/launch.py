"""One attempt at running a plan (its command, process, preflight checks and outcome), the comparison
of predicted and logged buffers, and the smaller plan after an out-of-memory. The waiting, retrying and
benchmarking around it live in lifecycle.LaunchMachine."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..hardware.rig import MIB, Rig
from ..model.info import ModelInfo
from ..planner import Plan, PlanSettings
from ..planner.recovery import recover
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
    warnings: list[str] = field(default_factory=list)  # ready, but not as planned (e.g. no layer on a GPU)


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


def placement_warnings(plan: Plan, rig: Rig, report: BufferReport, backend: str) -> list[str]:
    """The plan put layers on GPUs but the engine's log shows none there (only CPU buffers): a build
    without CUDA, or a simulated rig's plan run on this PC. Without any buffer line there is no evidence."""
    if not any(d.layers for d in plan.gpus) or any(dev.startswith("gpu") for dev in report.devices()):
        return []
    if rig.simulated:
        return [f"This plan is for another PC (simulated rig {rig.name}): its GPUs are not in this computer."]
    if not report.buffers:
        return []
    if backend == "koboldcpp":
        return ["No layers reached a GPU: this koboldcpp has no CUDA (use koboldcpp_cu12 or a CUDA build)."]
    return [f"No layers reached a GPU: this {backend} has no CUDA (use a CUDA build)."]


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


def smaller_plan(model: ModelInfo, rig: Rig, settings: PlanSettings, plan: Plan, failure: Failure) -> PlanSettings | None:
    """The fastest plan that fits once the out-of-memory is taken into account (planner/recovery.py);
    None, with the reason added to the failure's sentence, when none does."""
    r = recover(model, rig, plan, failure.device, failure.requested_mib)
    if r.settings is None:
        failure.message = f"{failure.message} {r.reason}"
    return r.settings


class Launch:
    """One attempt: the exact command, its process and what came of it. Start it on a long-lived thread
    (see ServerProcess.start); LaunchMachine drives it."""

    def __init__(self, plan: Plan, rig: Rig, model: ModelInfo, model_path: str, exe: str | None = None,
                 backend: ServerBackend | None = None, on_line=None, log_dir: Path | None = None):
        self.plan, self.rig, self.model, self.model_path = plan, rig, model, model_path
        self.settings: PlanSettings = plan.settings
        self.backend = backend or backend_for(self.settings.backend)
        self.exe = exe or self.backend.find()
        self.on_line = on_line
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = (log_dir or data_dir() / "logs") / f"{self.backend.name}-{stamp}-{os.getpid()}.log"
        # the one place the final argv is built: the launch page and `phoenix plan` show the same
        self.command = self.backend.command(plan, rig, model_path, self.exe)
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

    def start(self) -> None:
        """Start the process (no checks: preflight() first). Raises OSError when it cannot be executed."""
        self.process = ServerProcess(self.command.argv, self.command.env, self.log_path, self.on_line).start()

    def ready(self) -> LaunchOutcome:
        """The API answered: compare the engine's logged buffers with the plan."""
        assert self.process is not None
        ready_s = time.monotonic() - self.process.started_at
        report = parse_log("\n".join(list(self.process.lines)))
        comp = compare(self.plan, report)
        if any(c.actual_bytes is not None for c in comp):
            record_calibration(self.plan, comp, self.model, self.backend.name)
        self.outcome = LaunchOutcome(True, ready_s, None, report, comp, self.log_path,
                                     placement_warnings(self.plan, self.rig, report, self.backend.name))
        return self.outcome

    def failed(self, code: int | None, during_load: bool) -> Failure:
        """Why the exited process stopped, from its output and exit status."""
        names = [d.name for d in self.plan.gpus]
        lines = list(self.process.lines) if self.process else []
        f = classify(lines, code, during_load, self.port, names)
        self.outcome = LaunchOutcome(False, failure=f, log_path=self.log_path)
        return f

    def check_alive(self) -> Failure | None:
        """None while running (or never started), else why it stopped."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is None:
            return None
        self.process.wait_output()
        return self.failed(code, during_load=False)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        return self.process.stop(timeout, graceful=lambda: self.backend.graceful_stop(self.host, self.port))
