from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """Fixed-size (time, value) history; appends are O(1), reads return ordered copies."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._t = np.zeros(self.capacity)
        self._v = np.full(self.capacity, np.nan)
        self._n = 0  # total appended
        self._lock = threading.Lock()

    def append(self, t: float, v: float | None) -> None:
        with self._lock:
            i = self._n % self.capacity
            self._t[i] = t
            self._v[i] = np.nan if v is None else v
            self._n += 1

    def __len__(self) -> int:
        return min(self._n, self.capacity)

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            n = len(self)
            if self._n <= self.capacity:
                return self._t[:n].copy(), self._v[:n].copy()
            i = self._n % self.capacity
            return np.concatenate([self._t[i:], self._t[:i]]), np.concatenate([self._v[i:], self._v[:i]])

    def last(self) -> float | None:
        with self._lock:
            if not self._n:
                return None
            v = self._v[(self._n - 1) % self.capacity]
            return None if np.isnan(v) else float(v)
