"""A server's output: bytes split into bounded lines as they come, and a log file that rotates instead of
growing without end."""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

MAX_LINE_CHARS = 4096  # a longer line (or MBs without a newline) is cut into pieces of this size
LOG_MAX_BYTES = 20 << 20  # then the log moves to <log>.1 and a new one starts
_EOL = re.compile(r"\r\n|\r|\n")  # koboldcpp ends progress lines with \r alone


class LineSplitter:
    """Bytes in, lines out, incrementally: only the unfinished tail is kept between reads (so output
    without newlines costs linear time), \r, \n and \r\n each end a line (also when a \r\n is cut
    between two reads), a line is at most max_chars (longer ones come out in pieces), and UTF-8 cut
    between reads is decoded whole."""

    def __init__(self, max_chars: int = MAX_LINE_CHARS):
        self.max_chars = max_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._tail = ""
        self._after_cr = False

    def feed(self, data: bytes) -> list[str]:
        return self._split(self._decoder.decode(data))

    def close(self) -> list[str]:
        out = self._split(self._decoder.decode(b"", final=True))
        if self._tail:
            out.append(self._tail)
            self._tail = ""
        return out

    def _split(self, text: str) -> list[str]:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the \n of a \r\n whose \r ended the previous read
        if not text:
            return []
        self._after_cr = text.endswith("\r")
        parts = _EOL.split(self._tail + text)
        self._tail = parts.pop()
        out: list[str] = []
        for part in parts:
            out.extend(self._cut(part))
        if len(self._tail) > self.max_chars:
            pieces = self._cut(self._tail)
            self._tail = pieces.pop()
            out.extend(pieces)
        return out

    def _cut(self, line: str) -> list[str]:
        n = self.max_chars
        return [line[i:i + n] for i in range(0, len(line), n)] or [""]


class RotatingLog:
    """A log file that never grows past max_bytes: then it becomes <name>.1 (replacing an older one)
    and a new file starts with the command line and a pointer to the older part."""

    def __init__(self, path: Path, header: str, max_bytes: int = LOG_MAX_BYTES):
        self.path, self.header, self.max_bytes = path, header, max_bytes
        self.rotations = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "wb")
        self._size = 0
        try:
            self._put(header.encode("utf-8", "replace"))
        except OSError:  # a full disk: no open file left behind
            self._f.close()
            raise

    def write_lines(self, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        if self._size + len(data) > self.max_bytes and self._size > len(self.header):
            self._rotate()
        self._put(data)

    def _put(self, data: bytes) -> None:
        self._f.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        self._f.close()
        older = self.path.with_name(self.path.name + ".1")
        os.replace(self.path, older)
        self.rotations += 1
        self._f = open(self.path, "wb")
        self._size = 0
        self._put((self.header + f"(continued: the output before this is in {older.name})\n").encode("utf-8", "replace"))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()
