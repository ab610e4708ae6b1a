"""Build the real koboldcpp 1.115.1 (CPU library) once per machine, for the tests.

The source tarball lives beside the project (../shared/vendor, AGPL-3.0; we build and run it, we never copy
its code). The build goes into a cache folder keyed by the tarball's sha256, like pip's wheel cache, so a
machine pays the ~6-minute `make koboldcpp_default -j2` once and every later pytest run reuses it. A lock
file keeps two pytest processes from building at once; a half-finished build is never reused (the
`.so` is only trusted next to a `build-ok` stamp written after make succeeds).

Run `python tests/kcpp_build.py` to pre-build (CI does, so the build log shows before pytest starts).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARBALL = Path(os.environ.get("PHOENIX_KCPP_TARBALL",
                              ROOT.parent / "shared" / "vendor" / "koboldcpp-1.115.1-src.tar.xz"))
CACHE = Path(os.environ.get("PHOENIX_KCPP_CACHE", Path.home() / ".cache" / "phoenix"))
LIBRARY = "koboldcpp_default.so"
STAMP = "build-ok"


class BuildError(RuntimeError):
    """The build could not be made; the message says why in one sentence (and where the log is)."""


def tarball_hash(path: Path = TARBALL) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir(digest: str) -> Path:
    return CACHE / f"koboldcpp-{digest[:16]}"


def _tree(folder: Path) -> Path | None:
    """The unpacked source folder (the one holding koboldcpp.py), if any."""
    hits = sorted(folder.glob("*/koboldcpp.py"))
    return hits[0].parent if hits else None


def built_tree(digest: str | None = None) -> Path | None:
    """The finished build's folder for this tarball, or None when it has not been built here."""
    if not TARBALL.is_file():
        return None
    folder = cache_dir(digest or tarball_hash())
    tree = _tree(folder)
    if tree and (folder / STAMP).is_file() and (tree / LIBRARY).is_file():
        return tree
    return None


def missing_tools() -> list[str]:
    return [t for t in ("make", "gcc", "g++") if shutil.which(t) is None]


def build(jobs: int = 2, echo=None) -> Path:
    """Unpack and build once (under a lock); returns the folder holding koboldcpp.py and the .so."""
    if not TARBALL.is_file():
        raise BuildError(f"the koboldcpp source tarball is not at {TARBALL}.")
    digest = tarball_hash()
    folder = cache_dir(digest)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the second process waits here, then finds the stamp
        done = built_tree(digest)
        if done:
            return done
        missing = missing_tools()
        if missing:
            raise BuildError(f"cannot build koboldcpp: {', '.join(missing)} not found.")
        for old in folder.iterdir():  # a failed or interrupted earlier try: start clean
            if old.name != "lock":
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        with tarfile.open(TARBALL) as tf:
            try:
                tf.extractall(folder, filter="data")  # no links or paths out of the folder
            except TypeError:  # a Python without extraction filters (before 3.11.4 / 3.10.12)
                tf.extractall(folder)
        tree = _tree(folder)
        if tree is None:
            raise BuildError(f"{TARBALL.name} holds no koboldcpp.py.")
        log = folder / "build.log"
        start = time.monotonic()
        with open(log, "w") as out:
            rc = subprocess.call(["make", LIBRARY.removesuffix(".so"), f"-j{jobs}"], cwd=tree,
                                 stdout=out, stderr=subprocess.STDOUT)
        took = time.monotonic() - start
        if rc != 0 or not (tree / LIBRARY).is_file():
            raise BuildError(f"make koboldcpp_default failed (exit {rc}); see {log}.")
        (folder / STAMP).write_text(f"{took:.0f} s\n")
        if echo:
            echo(f"built {tree / LIBRARY} in {took:.0f} s")
        return tree


def build_seconds(tree: Path) -> str:
    stamp = tree.parent / STAMP
    return stamp.read_text().strip() if stamp.is_file() else "?"


if __name__ == "__main__":
    try:
        t = build(echo=print)
    except BuildError as e:
        logs = sorted(CACHE.glob("koboldcpp-*/build.log"), key=lambda p: p.stat().st_mtime)
        if logs:  # CI shows why, not only where the log was
            print("".join(logs[-1].read_text(errors="replace").splitlines(True)[-40:]), file=sys.stderr)
        print(f"koboldcpp build: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"koboldcpp ready: {t} (build took {build_seconds(t)})")
