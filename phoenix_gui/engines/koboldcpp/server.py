"""koboldcpp's program and server: its file names, its HTTP API (readiness, throughput, generation, stop),
its RPC host mode (--rpcmode host) and the RPC protocol a koboldcpp.py source tree declares."""

from __future__ import annotations

import time
from pathlib import Path

from ..base import Engine, GenerationResult, Throughput
from ..http import HttpError, base_url, get_json, post_json, request

EXE_NAMES = ("koboldcpp", "koboldcpp.exe", "koboldcpp_cu12.exe", "koboldcpp_cu12", "koboldcpp_nocuda.exe",
             "koboldcpp_oldpc.exe", "koboldcpp-linux-x64-cuda1210", "koboldcpp-linux-x64", "koboldcpp.py")


class KoboldCpp(Engine):
    name = "koboldcpp"
    exe_names = EXE_NAMES
    exe_hint = "kobold"
    rpc_host = True  # --rpcmode host
    cuda_build_advice = "use koboldcpp_cu12 or a CUDA build"

    def is_ready(self, host, port) -> bool:
        try:
            d = get_json(base_url(host, port) + "/api/extra/version", timeout=2)
        except HttpError:
            return False
        return isinstance(d, dict) and d.get("result") == "KoboldCpp"

    def graceful_stop(self, host, port) -> None:
        request(base_url(host, port) + "/api/extra/shutdown", {}, timeout=3)

    def throughput(self, host, port) -> Throughput | None:
        try:
            d = get_json(base_url(host, port) + "/api/extra/perf", timeout=2)
        except HttpError:
            return None
        if not isinstance(d, dict):
            return None
        idle = d.get("idle")
        return Throughput(measured_speed(d.get("last_eval_speed"), d.get("last_token_count")),
                          measured_speed(d.get("last_process_speed"), d.get("last_input_count")),
                          d.get("total_gens"), None if idle is None else not idle, last_request=True)

    def generate(self, host, port, prompt, n_predict, context) -> GenerationResult:
        url = base_url(host, port)
        t0 = time.perf_counter()
        r = post_json(url + "/api/v1/generate", {
            "prompt": prompt, "max_length": n_predict, "max_context_length": context, "temperature": 0.01,
            "top_k": 1, "rep_pen": 1.0, "ban_eos_token": True, "sampler_seed": 1})
        wall = time.perf_counter() - t0
        res = (r.get("results") or [{}])[0]
        perf = get_json(url + "/api/extra/perf")
        n_prompt = int(res.get("prompt_tokens", perf.get("last_input_count", 0)) or 0)
        n_gen = int(res.get("completion_tokens", perf.get("last_token_count", 0)) or 0)
        gen_speed = float(perf.get("last_eval_speed", 0.0))
        if n_gen > 0 and gen_speed <= 0 and wall > 0:
            # koboldcpp reports 0 when its per-token time rounds to 0 ms (a tiny model on a fast CPU): the request's
            # own wall time, prompt and HTTP included, gives a lower bound instead of a speed of nothing
            gen_speed = n_gen / wall
        return GenerationResult(n_prompt, float(perf.get("last_process_speed", 0.0)), n_gen, gen_speed)

    def count_tokens(self, host, port, text) -> int | None:
        try:
            return int(post_json(base_url(host, port) + "/api/extra/tokencount", {"prompt": text}, timeout=30)["value"])
        except (HttpError, KeyError, TypeError, ValueError):
            return None

    # --- RPC host ---
    def host_argv(self, exe, host, port, devices, cpu_only=False) -> list[str]:
        argv = self.exe_argv(exe) + ["--skiplauncher", "--rpcmode", "host", "--rpchost", host, "--rpcport", str(port)]
        if devices:
            argv += ["--rpcdevice", ",".join(devices)]
        # koboldcpp loads its CUDA library only with --usecuda; without NVIDIA GPUs it shares the CPU
        return argv + (["--usecpu"] if cpu_only or not _has_nvidia() else ["--usecuda"])

    def source_protocol(self, exe) -> tuple[int, int, int] | None:
        """A koboldcpp.py source tree declares its protocol in ggml/include/ggml-rpc.h (a binary is asked
        in host mode instead: backends/protocols.py)."""
        header = Path(exe).parent / "ggml" / "include" / "ggml-rpc.h"
        try:
            with open(header, "rb") as f:  # the first 100 KB only: the real header is ~4 KB
                text = f.read(100_000).decode("utf-8", errors="replace")
        except OSError:
            return None
        parts = {}
        for line in text.splitlines():
            bits = line.split()
            if len(bits) == 3 and bits[0] == "#define" and bits[1].startswith("RPC_PROTO_") and bits[2].isascii() and bits[2].isdigit():
                parts[bits[1]] = int(bits[2])
        try:
            return (parts["RPC_PROTO_MAJOR_VERSION"], parts["RPC_PROTO_MINOR_VERSION"],
                    parts["RPC_PROTO_PATCH_VERSION"])
        except KeyError:
            return None


def measured_speed(speed, tokens) -> float | None:
    """koboldcpp's speed for its last request, or None where it has none to give.

    It divides tokens by a per-token time in whole milliseconds, so a tiny model on a fast CPU reads 0 tokens/s for a
    request that did produce tokens: that is "too fast to time", not "stalled", and a graph must not show it as 0."""
    if not isinstance(speed, (int, float)) or isinstance(speed, bool):
        return None
    if speed <= 0 and isinstance(tokens, int) and tokens > 0:
        return None
    return float(speed)


def _has_nvidia() -> bool:
    from ...hardware.nvml import detect_gpus

    try:
        return bool(detect_gpus()[0])
    except Exception:  # noqa: BLE001 - no NVML: no NVIDIA GPU to share
        return False
