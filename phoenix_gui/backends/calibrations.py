"""This PC's calibrations on disk: one JSON file per GPU set, driver, engine and version in the data folder,
and the plain files people export and send each other.

Everything read here is treated as hostile: a file someone sent, or one a crash or a full disk cut short.
So a file is read only when it is a regular file under a size cap (a FIFO would block, /dev/zero would read
until memory runs out), parsed with a bound on nesting, and checked number by number
(Calibration.from_dict); its name in the data folder comes from a closed set of engines and a hash, never
from its text, so no content can place a file outside the folder. A stored calibration that no longer reads
is set aside under a new name and said once, like a damaged settings file: planning goes on without it.
Writes are atomic (a temporary file in the same folder, then a rename), and the temporary file is removed
when the write fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from .. import validate as v
from ..hardware.rig import Rig
from ..hardware.calibration import Calibration
from ..storage import data_dir, write_atomic

MAX_BYTES = 256 << 10  # a calibration is a few KiB; anything near this is not one
FOLDER = "calibrations"


class CalibrationFileError(v.InputError):
    """A calibration file that cannot be read or written, in one sentence; detail: why, without the name."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


def folder() -> Path:
    return data_dir() / FOLDER


def rig_key(rig: Rig, backend: str, version: str) -> dict:
    return {"gpus": sorted(g.uuid for g in rig.gpus), "driver": rig.gpus[0].driver_version if rig.gpus else "",
            "engine": backend, "version": version}


def path_for(key: dict) -> Path:
    """The file of this key: the engine from the closed set, the rest hashed. Raises CalibrationFileError."""
    engine = key.get("engine") if isinstance(key, dict) else None
    if engine not in v.BACKENDS:
        raise CalibrationFileError(f"A calibration must name its engine ({', '.join(v.BACKENDS)}).")
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    home = folder()
    p = home / f"{engine}-{h}.json"
    if p.parent != home:  # cannot happen with the names above; a last line against a future change
        raise CalibrationFileError("A calibration's file name would leave Phoenix's data folder.")
    return p


def parse(raw: bytes, name: str) -> Calibration:
    """Bytes of a calibration file -> Calibration; CalibrationFileError (one sentence) for anything else."""
    try:
        d = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _unusable(name, "not UTF-8 text") from None
    except RecursionError:
        raise _unusable(name, "nested too deeply") from None
    except ValueError:
        raise _unusable(name, "not JSON") from None
    try:
        return Calibration.from_dict(d)
    except ValueError as e:
        raise _unusable(name, str(e).rstrip(".")) from None


def _unusable(name: str, why: str) -> CalibrationFileError:
    return CalibrationFileError(f"{name} is not a usable Phoenix calibration ({why}).", why)


def read_file(path: str | Path) -> Calibration:
    """A calibration from a file: a regular file (never a FIFO or a device), at most MAX_BYTES, read once."""
    if isinstance(path, str):
        v.text(path, "The calibration file name")
    st = v.regular_file(path, "The calibration file")
    name = Path(path).name
    if st.st_size > MAX_BYTES:
        raise CalibrationFileError(f"{name} is too large ({st.st_size:,} bytes) to be a calibration "
                                   f"(at most {MAX_BYTES >> 10} KiB).")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)  # the file may have grown since stat
    except OSError as e:
        raise CalibrationFileError(f"{name} could not be read ({e.strerror or e}).") from None
    if len(raw) > MAX_BYTES:
        raise CalibrationFileError(f"{name} is too large to be a calibration (at most {MAX_BYTES >> 10} KiB).")
    return parse(raw, name)


def _write(p: Path, cal: Calibration) -> None:
    """storage.write_atomic: a reader never sees half a file, a link is replaced (never written through),
    a failed write leaves nothing behind."""
    try:
        write_atomic(p, json.dumps(cal.to_dict(), indent=1, allow_nan=False).encode("utf-8"))
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e)
        raise CalibrationFileError(f"The calibration could not be written to {p} ({why}).") from None


def save(cal: Calibration) -> Path:
    """Keep a calibration in the data folder; raises CalibrationFileError (one sentence)."""
    p = path_for(cal.key)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CalibrationFileError(f"Phoenix's calibration folder {p.parent} could not be made "
                                   f"({e.strerror or e}).") from None
    _write(p, cal)
    return p


def stored() -> tuple[list[Calibration], list[str]]:
    """(the calibrations in the data folder, one sentence per damaged file set aside this time)."""
    home = folder()
    try:
        entries = sorted(os.scandir(home), key=lambda e: e.name)
    except OSError:
        return [], []
    out, notes = [], []
    for e in entries:
        if not e.name.endswith(".json") or e.name.startswith("."):
            continue
        try:
            if not e.is_file(follow_symlinks=False):
                raise CalibrationFileError(f"{e.name} is not a regular file.", "not a regular file")
            out.append(read_file(e.path))
        except v.InputError as err:  # CalibrationFileError, or regular_file's (the file changed meanwhile)
            notes.append(_set_aside(Path(e.path), getattr(err, "detail", str(err)).rstrip(".")))
    return out, notes


def _set_aside(p: Path, why: str) -> str:
    """Rename a damaged stored calibration out of the way (never over an earlier copy) and say so."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 100):
        aside = p.with_name(f"{p.name}.damaged-{stamp}{'' if n == 1 else f'-{n}'}")
        if aside.exists() or aside.is_symlink():
            continue
        try:
            os.rename(p, aside)
        except OSError:
            break
        return (f"The stored calibration {p.name} is not usable ({why}), so it was set aside as {aside.name}; "
                "planning goes on without it.")
    return f"The stored calibration {p.name} is not usable ({why}); planning goes on without it."


def find(rig: Rig, backend: str, version: str | None = None) -> tuple[Calibration | None, str]:
    """The calibration for this rig and engine (the newest, when the version is not known) and one
    sentence: what applies, or why an earlier calibration no longer does ("" when there is none)."""
    every, notes = stored()
    cal, note = _match(every, rig, backend, version)
    return cal, " ".join(notes + ([note] if note else []))


def _match(every: list[Calibration], rig: Rig, backend: str, version: str | None) -> tuple[Calibration | None, str]:
    mine = [c for c in every if c.key.get("engine") == backend]
    gpus = sorted(g.uuid for g in rig.gpus)
    driver = rig.gpus[0].driver_version if rig.gpus else ""
    same_rig = [c for c in mine if c.key.get("gpus") == gpus and c.key.get("driver") == driver]
    match = [c for c in same_rig if version is None or c.key.get("version") == version]
    if match:
        c = max(match, key=lambda c: c.created)
        return c, describe(c)
    if same_rig:
        c = max(same_rig, key=lambda c: c.created)
        return None, (f"The calibration from {_date(c)} no longer applies: {backend} is now {version} "
                      f"(it was measured with {c.key.get('version')}); tune again.")
    if mine:
        c = max(mine, key=lambda c: c.created)
        why = "the driver changed" if c.key.get("gpus") == gpus else "the GPUs changed"
        return None, f"The calibration from {_date(c)} no longer applies: {why}; tune again."
    return None, ""


def describe(c: Calibration) -> str:
    return f"calibrated on this PC ({c.runs} runs, {_date(c)})"


def _date(c: Calibration) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(c.created))


def check_export(path: str | Path, force: bool = False) -> Path:
    """May a calibration be exported to `path`? The rules of every file Phoenix writes for the user
    (validate.check_writable: never through a link, never over a model by name or by its GGUF magic,
    never over a file without force, the folder must exist), and the folder must take a file. Checked
    before a tune starts, so a bad name fails in a second, not after the whole tune."""
    p = v.check_writable(path, force=force, what="calibration")
    if not v.folder_writable(p.parent):
        raise CalibrationFileError(f"The folder {p.parent} cannot be written to, so the calibration cannot be "
                                   "exported there.")
    return p


def export_to(cal: Calibration, path: str | Path, force: bool = False) -> Path:
    """Write a calibration for another PC; raises InputError (one sentence). Checked again at write time:
    the path may have changed during a tune."""
    p = check_export(path, force)
    _write(p, cal)
    return p


def import_from(path: str | Path) -> Calibration:
    """Read a shared calibration and keep it; raises InputError with one sentence. Nothing is written
    unless the whole file is a sound calibration."""
    cal = read_file(path)
    save(cal)
    return cal
