"""One attempt at running a plan (its command, process, preflight checks and outcome), the comparison
of predicted and logged buffers, and the smaller plan after an out-of-memory. The waiting, retrying and
benchmarking around it live in lifecycle.LaunchMachine."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..hardware.rig import MIB, Rig
from ..model.info import ModelInfo
from ..planner import Plan, PlanSettings
from ..planner.recovery import recover
from ..storage import data_dir
from ..validate import InputError
from ..hardware.cluster import machine_of
from ..engines import engine_named
from ..engines.base import Engine
from ..engines.devices import engine_devices, rpc_nodes
from ..engines.quoting import check_value
from .commandline import launch_command, request_for
from .diagnose import Failure, classify, missing_nodes, pc_name
from .logparse import BufferReport, parse_log
from .nodes import NodeError, describe_node
from .protocols import check_version
from .processes.ports import address_problem
from .processes.process import LogFolderError, ServerProcess


NODE_TIMEOUT_S = 3.0  # asking another PC's RPC server before a launch


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


def logged_mib(report: BufferReport, buffer: str, kinds=("model", "KV", "compute")) -> float | None:
    """What the engine logged for one of its devices, by the buffer name it uses (CUDA1, RPC0[host:port]);
    None when it logged nothing for it. An RPC device is told apart by its endpoint, which logparse's
    per-device keys ('rpc0' for the first device of every server) leave out."""
    if buffer.startswith("CUDA"):
        key = "gpu" + buffer[4:]
        return sum(report.mib(key, k) for k in kinds) if key in report.devices() else None
    got = [mib for (b, k), mib in report.buffers.items() if b == buffer and k in kinds]
    return sum(got) if got else None


def compare(plan: Plan, report: BufferReport, rig: Rig | None = None) -> list[DeviceComparison]:
    """Predicted vs logged per device (weights + KV + compute; overheads are not in the engine's log)."""
    out = []
    names = _buffer_names(plan, rig)
    for i, d in enumerate(plan.gpus):
        actual = logged_mib(report, names[i])
        out.append(DeviceComparison(d.name, d.weights_bytes + d.kv_bytes + d.compute_bytes,
                                    int(actual * MIB) if actual is not None else None))
    cpu = plan.cpu
    actual = sum(report.mib("cpu", k) for k in ("model", "KV", "compute", "output")) if "cpu" in report.devices() else None
    # the engine logs the host's weights as its buffers (the mapped span of the file, repacked copies),
    # which can exceed the host's own tensors: compare like with like
    host_weights = sum(cpu.model_buffers.values()) if cpu.model_buffers else cpu.weights_bytes
    out.append(DeviceComparison(cpu.name, host_weights + cpu.kv_bytes + cpu.compute_bytes,
                                int(actual * MIB) if actual is not None else None))
    return out


def _buffer_names(plan: Plan, rig: Rig | None) -> list[str]:
    """Per GPU of the plan, the engine's name for its buffers (RPC devices first, then CUDA0, 1, ...)."""
    if rig is None:
        return [f"CUDA{i}" for i in range(len(plan.gpus))]
    by_pos = {i: b for i, _n, b in engine_devices(request_for(plan, rig)) if i is not None}
    return [by_pos[i] for i in range(len(plan.gpus))]


def placement_warnings(plan: Plan, rig: Rig, report: BufferReport, backend: str) -> list[str]:
    """The plan put layers on GPUs but the engine's log shows none there (only CPU buffers): a build
    without CUDA, or a simulated rig's plan run on this PC. Without any buffer line there is no evidence.
    Layers on another PC's device count when its RPC buffers are there."""
    names = _buffer_names(plan, rig)
    if not any(d.layers for d in plan.gpus) or any(dev.startswith("gpu") for dev in report.devices()):
        return []
    if any(d.layers and not n.startswith("CUDA") and logged_mib(report, n) is not None
           for d, n in zip(plan.gpus, names)):
        return []
    if rig.simulated:
        return [f"This plan is for another PC (simulated rig {rig.name}): its GPUs are not in this computer."]
    if not report.buffers:
        return []
    return [f"No layers reached a GPU: this {backend} has no CUDA ({engine_named(backend).cuda_build_advice})."]


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
                 backend: Engine | None = None, on_line=None, log_dir: Path | None = None):
        self.plan, self.rig, self.model, self.model_path = plan, rig, model, model_path
        self.settings: PlanSettings = plan.settings
        self.backend = backend or engine_named(self.settings.backend)
        self.exe = exe or self.backend.find()
        self.on_line = on_line
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = (log_dir or data_dir() / "logs") / f"{self.backend.name}-{stamp}-{os.getpid()}.log"
        # the one place the final argv is built: the launch page and `phoenix plan` show the same
        self.command = launch_command(plan, rig, model_path, self.exe)
        self.process: ServerProcess | None = None
        self.outcome: LaunchOutcome | None = None
        # other PCs whose devices the plan uses: host:port -> the PC's name, in --rpc order
        self.nodes = {a: machine_of(rig, next(g for g in rig.gpus if g.node == a))
                      for a in rpc_nodes(request_for(plan, rig))}
        self._node_failure: Failure | None = None

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
        for value in [*self.command.argv, *self.command.env.values()]:
            try:
                check_value(value, "A value of the command line")
            except InputError as e:
                return Failure("input", str(e))
        problem = address_problem(self.host, self.port)
        if problem:
            return Failure("port", problem)
        return self._nodes_ready()

    def _nodes_ready(self) -> Failure | None:
        """Each other PC answers as an RPC server with the protocol this engine speaks (the engine would
        otherwise load their layers on the CPU without a word, or abort)."""
        for address, name in self.nodes.items():
            try:
                node = describe_node(address, timeout=NODE_TIMEOUT_S, measure=False)
                node.name = name
                if self.backend.rpc_host:  # llama-server's protocol cannot be asked here (no host mode)
                    check_version(node, self.exe)
            except NodeError as e:
                msg = str(e).replace(f"The PC at {address}", pc_name(address, self.nodes), 1)
                return Failure("node", msg, node=address)
        return None

    def start(self) -> None:
        """Start the process (no checks: preflight() first). Raises OSError when it cannot be executed,
        LogFolderError when its log cannot be written (then log_path is None: no log was written)."""
        try:
            self.process = ServerProcess(self.command.argv, self.command.env, self.log_path, self._line).start()
        except LogFolderError:
            self.log_path = None
            raise

    def _line(self, line: str) -> None:
        """Every output line: passed on, and watched for a node that gave the engine no device."""
        if self.nodes and self._node_failure is None and "load_tensors:" in line and self.process:
            gone = missing_nodes(list(self.process.lines), list(self.nodes))
            if gone:
                self._node_failure = Failure(
                    "node", f"{pc_name(gone[0], self.nodes)} did not answer when the model loaded (is its RPC "
                    "server running, on this address and port?); the engine would have run its layers on this "
                    "PC's CPU, so it was stopped.", node=gone[0])
                self.process.terminate()  # on the reader thread, which stop() would wait for: stop() follows
        if self.on_line:
            self.on_line(line)

    def ready(self) -> LaunchOutcome:
        """The API answered: compare the engine's logged buffers with the plan."""
        assert self.process is not None
        ready_s = time.monotonic() - self.process.started_at
        report = parse_log("\n".join(list(self.process.lines)))
        comp = compare(self.plan, report, self.rig)
        self.outcome = LaunchOutcome(True, ready_s, None, report, comp, self.log_path,
                                     placement_warnings(self.plan, self.rig, report, self.backend.name))
        return self.outcome

    def failed(self, code: int | None, during_load: bool) -> Failure:
        """Why the exited process stopped, from its output and exit status."""
        names = [d.name for d in self.plan.gpus]
        lines = list(self.process.lines) if self.process else []
        f = self._node_failure or classify(lines, code, during_load, self.port, names, self.nodes)
        if f.kind == "node" and f.node is None:
            f = self._which_node(f)
        self.outcome = LaunchOutcome(False, failure=f, log_path=self.log_path)
        return f

    def _which_node(self, f: Failure) -> Failure:
        """The engine lost an RPC connection without saying to which PC: the one that no longer answers."""
        for address in self.nodes:
            host, _, port = address.rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=NODE_TIMEOUT_S).close()
            except OSError:
                return Failure("node", f"{pc_name(address, self.nodes)} stopped answering (its RPC server stopped or "
                               "crashed, or the network dropped); the server was stopped.", exit_code=f.exit_code,
                               node=address)
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
