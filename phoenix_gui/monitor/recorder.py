"""Run samplers at a fixed rate on one thread, keep 30 minutes in ring buffers, export CSV."""

from __future__ import annotations

import csv
import io
import threading
import time
from pathlib import Path

from ..storage import write_atomic
from .ring import RingBuffer

KEEP_S = 30 * 60


class Series(dict):
    """name -> RingBuffer"""


class Monitor:
    def __init__(self, samplers: list, hz: float = 1.0):
        if not 0.5 <= hz <= 10:
            raise ValueError("the sampling rate must be between 0.5 and 10 Hz")
        self.samplers = samplers
        self.hz = hz
        self.series: Series = Series()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = time.time()

    def _buf(self, name: str) -> RingBuffer:
        b = self.series.get(name)
        if b is None:
            b = self.series[name] = RingBuffer(int(KEEP_S * self.hz) + 1)
        return b

    def tick(self) -> None:
        now = time.time()
        for s in self.samplers:
            try:
                values = s.sample()
            except Exception:  # noqa: BLE001 - one broken sampler must not stop the others
                continue
            for k, v in values.items():
                self._buf(k).append(now, v)

    def _run(self) -> None:
        period = 1.0 / self.hz
        nxt = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            nxt += period
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def start(self) -> "Monitor":
        self._thread = threading.Thread(target=self._run, name="phoenix-monitor", daemon=True)
        self._thread.start()
        return self

    def stop_thread(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def stop(self) -> None:
        self.stop_thread()
        for s in self.samplers:
            close = getattr(s, "close", None)
            if close:
                close()

    def export_csv(self, path: str | Path) -> Path:
        """One row per sample time, one column per series (empty where a series had no value)."""
        path = Path(path)
        cols = sorted(self.series)
        rows: dict[float, dict[str, float]] = {}
        for c in cols:
            t, v = self.series[c].data()
            for ti, vi in zip(t, v):
                rows.setdefault(round(float(ti), 3), {})[c] = vi
        f = io.StringIO(newline="")
        w = csv.writer(f)
        w.writerow(["time_s"] + cols)
        for t in sorted(rows):
            r = rows[t]
            w.writerow([f"{t - self.t0:.3f}"] + ["" if c not in r or r[c] != r[c] else f"{r[c]:.3f}" for c in cols])
        write_atomic(path, f.getvalue().encode("utf-8"))  # like every file Phoenix writes: whole, never through a link
        return path
