"""Read a file once so that the OS keeps it in its file cache: the tuner warms the model file before its
first run, so that every run, the first included, loads it from memory (tune.py's docstring says why)."""

from __future__ import annotations

import os
import threading
import time

WARM_CHUNK = 8 << 20


class FileWarmer:
    """Reads a file once on a thread, so that the OS keeps it in its file cache. Only the data is read:
    a sparse file's holes (SEEK_DATA/SEEK_HOLE where the OS has them) cost nothing to load either."""

    def __init__(self, path: str, guess_s: float = 30.0):
        self.path, self.read_bytes, self.error = path, 0, ""  # read_bytes: progress, holes counted
        self.guess_s = guess_s  # time left before the first chunk tells the speed
        self.data_bytes = 0  # what was actually read
        try:
            self.size = os.path.getsize(path)
        except OSError:
            self.size = 0
        self.started = time.monotonic()
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="phoenix-warm", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)  # one chunk at most

    def time_left(self) -> float:
        spent = time.monotonic() - self.started
        if self.done or not self.read_bytes:
            return 0.0 if self.done else self.guess_s
        return spent * max(0, self.size - self.read_bytes) / self.read_bytes

    def _run(self) -> None:
        buf = bytearray(WARM_CHUNK)
        try:
            with open(self.path, "rb", buffering=0) as f:
                for start, end in _data_ranges(f.fileno(), self.size):
                    f.seek(start)
                    left = end - start
                    while left > 0 and not self._stop.is_set():
                        n = f.readinto(memoryview(buf)[:min(left, WARM_CHUNK)])
                        if not n:
                            break
                        left -= n
                        self.read_bytes += n
                        self.data_bytes += n
                    self.read_bytes += max(0, left)  # a range cut short by a stop or the file's end
        except OSError as e:  # the run itself will say what is wrong with the file
            self.error = e.strerror or str(e)
        self.read_bytes = self.size
        self.seconds = time.monotonic() - self.started


def _data_ranges(fd: int, size: int):
    """(start, end) of the parts of the file that hold data; the whole file where the OS cannot tell."""
    if not hasattr(os, "SEEK_DATA"):
        yield 0, size
        return
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole after pos; EINVAL: the file system cannot tell
            if pos == 0:
                yield 0, size
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end
        pos = end
