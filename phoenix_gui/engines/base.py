"""What every engine Phoenix runs has in common: finding its program, reading its version, talking to its
server (readiness, throughput, generation, stop), and, for an RPC host, its command line and device list.

An engine subclass (engines/<engine>/server.py) says what differs: its file names, its HTTP API, its
capabilities (can it serve a model over HTTP? can it share this PC's devices as an RPC host?). Code above
asks those capabilities, never an engine's name.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .request import exe_argv

# ggml-rpc's start-up printout, the same in every engine built on it (koboldcpp's --rpcmode host and
# llama.cpp's rpc-server both call ggml_backend_rpc_start_server): "Starting RPC server vX.Y.Z", then one
# line per device, printf("  %s: %s (%zu MiB, %zu MiB free)\n", name, description, total, free)
# (ggml/src/ggml-rpc/ggml-rpc.cpp lines 1702-1713 of the koboldcpp 1.115.1 tree).
RPC_START = "Starting RPC server v"
RPC_DEVICE_LINE = re.compile(r"^\s+(\w+): (.*) \((\d+) MiB, (\d+) MiB free\)\s*$")


@dataclass
class Throughput:
    gen_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    generations: int | None = None  # completed requests so far, where the server counts them
    busy: bool | None = None  # a request is being processed now
    # True: the rates describe the last completed request (koboldcpp keeps them while idle);
    # False: the rate since the previous poll (llama-server: 0 while idle)
    last_request: bool = False


@dataclass
class GenerationResult:
    prompt_tokens: int
    prompt_tokens_per_s: float
    gen_tokens: int
    gen_tokens_per_s: float


class Engine:
    name = ""
    exe_names: tuple[str, ...] = ()  # the usual file names, the first the one run when none is given
    # a piece of a program's file name that says it is this engine; the longest that matches wins, and
    # "" (llama-server's: its binary has had several names) matches any program no other engine claims
    exe_hint = ""
    serves_model = True  # runs a model behind an HTTP API (False: only shares devices as an RPC host)
    rpc_host = False  # can share this PC's devices with another PC's engine over llama.cpp's RPC protocol
    host_label_versioned = True  # its RPC host's label shows its version
    cuda_build_advice = "use a CUDA build"  # what to run instead of a build that put no layer on a GPU

    # --- the program ---
    def exe_argv(self, exe: str | Path | None = None) -> list[str]:
        return exe_argv(exe, self.exe_names[0])

    def claims(self, exe: str | Path) -> bool:
        return self.exe_hint in Path(exe).name.lower()

    def find(self, remembered: str | None = None) -> str | None:
        """Remembered path, then PATH and the usual file names."""
        if remembered and Path(remembered).exists():
            return remembered
        for n in self.exe_names:
            p = shutil.which(n)
            if p:
                return p
        return None

    def version_argv(self, exe: str | Path) -> list[str]:
        return self.exe_argv(exe) + ["--version"]

    def parse_version(self, output: str) -> str:
        """The version in what `exe --version` printed: its first x.y[.z], else its first line."""
        out = output.strip()
        m = re.search(r"(\d+\.\d+(?:\.\d+)?)", out)
        return m.group(1) if m else (out.splitlines()[0] if out else "unknown")

    # --- its HTTP server (serves_model) ---
    def is_ready(self, host: str, port: int) -> bool:
        raise NotImplementedError

    def graceful_stop(self, host: str, port: int) -> None:
        pass

    def throughput(self, host: str, port: int) -> Throughput | None:
        raise NotImplementedError

    def generate(self, host: str, port: int, prompt: str, n_predict: int, context: int) -> GenerationResult:
        raise NotImplementedError

    def count_tokens(self, host: str, port: int, text: str) -> int | None:
        return None

    # --- as an RPC host (rpc_host) ---
    def host_argv(self, exe: str | Path, host: str, port: int, devices: list[str], cpu_only: bool = False) -> list[str]:
        """The command that shares this PC's devices (ggml names such as CUDA0; none: the engine's choice)
        on host:port; cpu_only: just the CPU."""
        raise NotImplementedError(f"{self.name} cannot share devices as an RPC host.")

    def host_label(self, version: str | None) -> str:
        """How the info endpoint names this host engine; version: what `exe --version` said, asked only
        where host_label_versioned (starting the program costs seconds)."""
        return f"{self.name} {version}"

    def rpc_devices(self, lines: list[str]) -> list[dict]:
        """The devices the host announced after its last start line, in RPC order."""
        start = max((i for i, s in enumerate(lines) if s.startswith(RPC_START)), default=-1)
        out = []
        for line in lines[start + 1:]:
            m = RPC_DEVICE_LINE.match(line)
            if m:
                out.append({"engine_name": m.group(1), "description": m.group(2).strip(),
                            "total_bytes": int(m.group(3)) << 20, "free_bytes": int(m.group(4)) << 20})
        return out

    def source_protocol(self, exe: str | Path) -> tuple[int, int, int] | None:
        """The RPC protocol version (major, minor, patch) a source tree beside exe declares, if it has one."""
        return None
