"""llama.cpp's rpc-server: the RPC host for llama-server users (koboldcpp users share with koboldcpp's own
--rpcmode host). It serves no model, only this PC's devices.

Its options, from its usage text (tools/rpc/rpc-server.cpp of the koboldcpp 1.115.1 tree, the same as
llama.cpp's tools/rpc/README.md): -H/--host HOST, -p/--port PORT, -d/--device <dev1,dev2,...> (comma-separated
ggml device names such as CUDA0), -t/--threads N (threads for the CPU device), -c/--cache (a local file cache
of tensors). Without -d it shares every non-CPU device, or the CPU when there is none. It prints the same
start line and device list as koboldcpp's host (both are ggml-rpc's: engines/base.py).
"""

from __future__ import annotations

from ..base import Engine

EXE_NAMES = ("rpc-server", "rpc-server.exe")
CPU_DEVICE = "CPU"  # ggml's CPU device name: what `-d` takes to share just the CPU


class RpcServer(Engine):
    name = "rpc-server"
    exe_names = EXE_NAMES
    exe_hint = "rpc-server"
    serves_model = False
    rpc_host = True
    host_label_versioned = False

    def host_argv(self, exe, host, port, devices, cpu_only=False, threads: int | None = None,
                  cache: bool = False) -> list[str]:
        argv = self.exe_argv(exe) + ["-H", host, "-p", str(port)]
        if devices:
            argv += ["-d", ",".join(devices)]
        elif cpu_only:
            argv += ["-d", CPU_DEVICE]
        if threads:
            argv += ["-t", str(threads)]
        return argv + (["-c"] if cache else [])

    def host_label(self, version) -> str:
        return "llama.cpp rpc-server"
