"""Parse llama.cpp's per-device buffer lines (also printed by koboldcpp, which embeds it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MIB = 1 << 20
# an RPC device's buffers carry its endpoint: "RPC0[127.0.0.1:5651] model buffer size = ..."
_LINE = re.compile(r"(?P<buf>[\w.\-]+(?:\[[^\]\s]*\])?)\s+(?P<kind>model|KV|compute|output|RS) buffer size =\s+(?P<mib>[\d.]+) MiB")
_NCTX = re.compile(r"\bn_ctx\s+=\s+(\d+)")
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_CUDA = re.compile(r"^CUDA(\d+)(?:_Split)?$")
_RPC = re.compile(r"^RPC(\d+)(?:\[.*\])?$")


def device_of_buffer(name: str) -> str:
    """'CUDA1' -> 'gpu1'; 'RPC0[host:port]' -> 'rpc0' (a remote device, first in llama.cpp's list);
    host buffers (CPU, CPU_Mapped, CUDA_Host, CPU_REPACK ...) -> 'cpu'."""
    m = _CUDA.match(name)
    if m:
        return f"gpu{m.group(1)}"
    m = _RPC.match(name)
    return f"rpc{m.group(1)}" if m else "cpu"


@dataclass
class BufferReport:
    """Bytes per device and kind as the engine logged them (MiB resolution of the log)."""

    buffers: dict[tuple[str, str], float] = field(default_factory=dict)  # (buffer name, kind) -> MiB
    n_ctx: int | None = None
    offloaded: tuple[int, int] | None = None

    def feed(self, line: str) -> None:
        m = _LINE.search(line)
        if m:
            key = (m.group("buf"), m.group("kind"))
            mib = float(m.group("mib"))
            if key[1] in ("KV", "RS", "model") and key in self.buffers:
                # two caches (e.g. sliding-window + full) or split weights add up
                self.buffers[key] += mib
            else:
                # a compute buffer re-reserved later replaces the earlier size
                self.buffers[key] = mib
            return
        m = _NCTX.search(line)
        if m and "llama_context" in line:
            self.n_ctx = int(m.group(1))
        m = _OFFLOADED.search(line)
        if m:
            self.offloaded = (int(m.group(1)), int(m.group(2)))

    def mib(self, device: str, kind: str) -> float:
        return sum(v for (buf, k), v in self.buffers.items() if k == kind and device_of_buffer(buf) == device)

    def devices(self) -> list[str]:
        return sorted({device_of_buffer(b) for b, _ in self.buffers})


def parse_log(text: str) -> BufferReport:
    r = BufferReport()
    for line in re.split(r"[\r\n]+", text):
        r.feed(line)
    return r
