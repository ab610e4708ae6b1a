"""Each sampler returns {series name: value or None}; an error degrades its series, never the app."""

from __future__ import annotations

from ..engines.base import Engine


def _s(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


class NvmlSampler:
    """Memory used/total, utilisation, temperature and power per GPU, keyed by UUID."""

    def __init__(self, gpus: list[tuple[str, str]], nvml=None):  # [(uuid, short name)]
        if nvml is None:
            import pynvml as nvml
        self.nvml = nvml
        self.gpus = gpus
        self.handles: dict[str, object] = {}
        self.note = ""
        self.ok = False
        try:
            nvml.nvmlInit()
            self.ok = True
            for i in range(nvml.nvmlDeviceGetCount()):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                self.handles[_s(nvml.nvmlDeviceGetUUID(h))] = h
        except Exception as e:  # noqa: BLE001 - no driver: no GPU series
            self.note = f"GPU monitoring is unavailable ({_s(e) or type(e).__name__})."

    def sample(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        n = self.nvml
        for uuid, _ in self.gpus:
            h = self.handles.get(uuid)
            keys = ("mem_used_mib", "mem_total_mib", "util_pct", "temp_c", "power_w")
            if h is None or not self.ok:
                out.update({f"{uuid}/{k}": None for k in keys})
                continue
            try:
                m = n.nvmlDeviceGetMemoryInfo(h)
                out[f"{uuid}/mem_used_mib"] = (m.total - m.free) / 2**20
                out[f"{uuid}/mem_total_mib"] = m.total / 2**20
            except Exception as e:  # noqa: BLE001 - the GPU fell off the bus: this series goes blank
                out[f"{uuid}/mem_used_mib"] = out[f"{uuid}/mem_total_mib"] = None
                self.note = f"A GPU stopped answering ({_s(e) or type(e).__name__}); its graph stops."
            for key, fn in (("util_pct", lambda: n.nvmlDeviceGetUtilizationRates(h).gpu),
                            ("temp_c", lambda: n.nvmlDeviceGetTemperature(h, 0)),
                            ("power_w", lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0)):
                try:
                    out[f"{uuid}/{key}"] = float(fn())
                except Exception:  # noqa: BLE001 - unsupported on this card or gone
                    out[f"{uuid}/{key}"] = None
        return out

    def close(self) -> None:
        if self.ok:
            try:
                self.nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
            self.ok = False


class ProcessSampler:
    """Resident memory of the server's whole process tree."""

    def __init__(self, pid: int):
        self.pid = pid

    def sample(self) -> dict[str, float | None]:
        try:
            import psutil

            p = psutil.Process(self.pid)
            rss = p.memory_info().rss
            for c in p.children(recursive=True):
                try:
                    rss += c.memory_info().rss
                except Exception:  # noqa: BLE001
                    pass
            return {"server/rss_mib": rss / 2**20}
        except Exception:  # noqa: BLE001 - the process is gone
            return {"server/rss_mib": None}


class ThroughputSampler:
    """Generation and prompt tokens/s now. llama-server reports the rate since the previous poll (0 while
    idle). koboldcpp reports the speeds of the last completed request and keeps them while idle: they are
    shown once, when a request completes, and an idle server reads 0 (it generates nothing)."""

    def __init__(self, backend: Engine, host: str, port: int):
        self.backend, self.host, self.port = backend, host, port
        self._gens: int | None = None  # completed requests at the previous poll

    def sample(self) -> dict[str, float | None]:
        t = self.backend.throughput(self.host, self.port)
        if t is None:
            return {"server/gen_tps": None, "server/prompt_tps": None}
        if not t.last_request:
            return {"server/gen_tps": t.gen_tokens_per_s, "server/prompt_tps": t.prompt_tokens_per_s}
        new = self._gens is not None and t.generations is not None and t.generations > self._gens
        self._gens = t.generations if t.generations is not None else self._gens
        if new:
            return {"server/gen_tps": t.gen_tokens_per_s, "server/prompt_tps": t.prompt_tokens_per_s}
        if t.busy:
            return {"server/gen_tps": None, "server/prompt_tps": None}  # running: its speed is not known yet
        return {"server/gen_tps": 0.0, "server/prompt_tps": 0.0}
