"""Where Phoenix keeps its files, and how it writes them.

Three folders from platformdirs: the config folder (settings.json) and the data folder (calibrations,
bench history, logs, errors.log), each unless PHOENIX_CONFIG_DIR / PHOENIX_DATA_DIR names another (tests,
a portable install), and the cache folder (the measured RAM bandwidth). Three ways of writing:
- write_atomic: a whole file at once (a temporary file in the same folder, then a rename), so a reader
  never sees half a file, a link at either name is replaced rather than written through, and a failed
  write leaves nothing behind.
- append_record / read_records: JSONL, one JSON object a line, appended; a damaged line is skipped.
- remove_leftovers: files or folders named for a process id whose process is gone (an interrupted save,
  a killed tune), so they do not pile up.
Pure stdlib (psutil only to ask whether a process lives): nothing here knows what the files mean.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

APP = "phoenix"


def config_dir() -> Path:
    env = os.environ.get("PHOENIX_CONFIG_DIR")
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP, appauthor=False))


def data_dir() -> Path:
    env = os.environ.get("PHOENIX_DATA_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP, appauthor=False))


def cache_dir() -> Path:
    """What can be measured again (the RAM bandwidth); no variable overrides it."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP, appauthor=False))


def temp_name(path: Path) -> Path:
    """The temporary file write_atomic writes before the rename: <name>.<pid>.tmp beside the target
    (remove_leftovers finds those of a process that is gone)."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, data: bytes) -> None:
    """Write data to path through a temporary file and a rename; raises OSError, and then leaves no
    temporary file. The temporary file is created exclusively and never through a link (a leftover of
    a process with this id is removed first)."""
    tmp = temp_name(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileExistsError:  # ours by its name: a leftover of an earlier process with this id
            os.unlink(tmp)
            fd = os.open(tmp, flags, 0o644)
        try:
            view = memoryview(data)
            while view:  # a full disk raises here (ENOSPC)
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def append_record(path: Path, record: dict) -> None:
    """Append one JSON object as a line of a JSONL file (its folder made when missing). A record is
    history, never needed to go on: a failed write is dropped silently."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError:
        pass


def read_records(path: Path) -> Iterator[dict]:
    """The JSON objects of a JSONL file, in order; a line that is not one is skipped, a missing or
    unreadable file has none."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if isinstance(d, dict):
                    yield d
    except OSError:
        return


def remove_leftovers(folder: str | Path, name: re.Pattern, older_than_s: float | None = None) -> list[Path]:
    """Remove the files and folders in `folder` whose name matches `name` (its group 1: the id of the
    process that made it) when that process is gone, or, with older_than_s, when it is older than that
    (a write that takes milliseconds). This process's own, another user's, and links are left alone.
    Returns what was removed; a missing folder has nothing."""
    import psutil

    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed, now = [], time.time()
    for e in entries:
        m = name.match(e.name)
        try:
            if not m or int(m.group(1)) == os.getpid():
                continue
            st = e.stat(follow_symlinks=False)
            is_dir = e.is_dir(follow_symlinks=False)
            if not (is_dir or e.is_file(follow_symlinks=False)) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
                continue
            if psutil.pid_exists(int(m.group(1))) and (older_than_s is None or now - st.st_mtime <= older_than_s):
                continue
            if is_dir:
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.remove(e.path)
        except (OSError, OverflowError, ValueError):
            continue
        removed.append(Path(e.path))
    return removed
