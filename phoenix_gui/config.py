"""User settings: last rig, model, context, split, executable, window geometry.

Stored as JSON in the user's config directory, written atomically (temp file + rename). The file
is checked field by field: a bad field falls back to its default and the rest is kept; the
original file is then set aside under a new name (never over an earlier copy), the repaired
settings are written back, and load_settings returns one sentence to show the user once.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import validate as v
from .storage import config_dir, remove_leftovers, write_atomic

MAX_RECENT = 10
_MAX_BYTES = 1 << 20
_TMP = re.compile(r"^settings\.json\.([0-9]+)\.tmp$")  # storage.write_atomic's temporary file
_TMP_STALE_S = 60.0  # a save takes milliseconds: an older temp file is a leftover of an interrupted one


class SettingsSaveError(OSError):
    """Settings could not be written; the message is one sentence for the user."""


@dataclass
class UserSettings:
    rig_path: str | None = None
    model_path: str | None = None
    preset: str | None = None
    context: int = v.DEFAULT_CONTEXT
    cache_type: str = "f16"
    flash_attn: bool = True
    batch: int = 512
    moecpu: int = 0
    gpulayers: int | None = None
    split: list[float] | None = None
    devices: list[str] | None = None  # GPU UUIDs in the chosen order
    backend: str = "koboldcpp"
    executables: dict[str, str] = field(default_factory=dict)  # backend -> path
    host: str = "127.0.0.1"
    port: int = 5001
    objective: str = "fastest"
    recent_models: list[str] = field(default_factory=list)
    geometry: str | None = None  # base64 of QWidget.saveGeometry()
    nodes: list[str] = field(default_factory=list)  # other PCs sharing devices over RPC, "host:port", --rpc order
    overrides: list[list[str]] = field(default_factory=list)  # tensor overrides [regex, device], first match wins
    threads: int | None = None  # CPU threads; None: the engine's choice
    use_mmap: bool | None = None  # None: the engine's default
    engine_options: dict = field(default_factory=dict)  # kept from an imported .kcpps (validate.ENGINE_OPTIONS)

    def remember_model(self, path: str) -> None:
        self.recent_models = [path] + [p for p in self.recent_models if p != path][: MAX_RECENT - 1]


def _optional(check):
    return lambda x: None if x is None else check(x)


def _str_list(x, what: str, max_items: int = 64) -> list[str]:
    if not isinstance(x, list) or len(x) > max_items:
        raise v.InputError(f"{what} must be a list.")
    return [v.text(p, what) for p in x]


def _uuids(x) -> list[str]:
    out = _str_list(x, "devices", v.MAX_DEVICES)
    if len(set(out)) != len(out):
        raise v.InputError("A GPU is listed twice in devices.")
    return out


def _node_addresses(x) -> list[str]:
    """Each address as --rpc takes it, checked by the one rule for RPC targets (no duplicates)."""
    out = _str_list(x, "nodes", v.MAX_DEVICES)
    return v.rpc_targets(",".join(out)) if out else []


def _executables(x) -> dict[str, str]:
    if not isinstance(x, dict):
        raise v.InputError("executables must be an object.")
    return {v.choice(k, "backend", v.BACKENDS): v.text(p, "An executable path") for k, p in x.items()}


def _overrides(x) -> list[list[str]]:
    """[[regex, device], ...]: each pattern a regex Python compiles, each device CPU or a GPU as the engines name
    one (CUDA1, RPC0): what reaches --overridetensors / -ot."""
    import re

    if not isinstance(x, list) or len(x) > 64:
        raise v.InputError("overrides must be a list of at most 64 pairs.")
    out = []
    for pair in x:
        if not isinstance(pair, list) or len(pair) != 2:
            raise v.InputError("Each tensor override is a [pattern, device] pair.")
        rx, dev = v.text(pair[0], "A tensor override's pattern", 4096), v.text(pair[1], "A tensor override's device", 64)
        if "," in rx or "=" in rx or not re.fullmatch(r"CPU|(CUDA|Vulkan|RPC)\d{1,2}", dev):
            raise v.InputError(f"{rx}={dev} is not a tensor override Phoenix can pass on.")
        try:
            re.compile(rx)
        except re.error:
            raise v.InputError(f"{rx!r} is not a regular expression.") from None
        out.append([rx, dev])
    return out


def _not_a_dict(x):
    raise v.InputError(f"{x!r} is not a set of engine options.")


def _flag(x) -> bool:
    if not isinstance(x, bool):
        raise v.InputError(f"{x!r} is not true or false.")
    return x


# one check per field: returns the value to keep or raises InputError
_CHECKS = {
    "rig_path": _optional(lambda x: v.text(x, "rig_path")),
    "model_path": _optional(lambda x: v.text(x, "model_path")),
    "preset": _optional(lambda x: v.text(x, "preset", 200)),
    "context": lambda x: v.context(x, "llama-server"),
    "cache_type": lambda x: v.choice(x, "KV cache type", v.CACHE_TYPES),
    "flash_attn": _flag,
    "batch": v.batch,
    "moecpu": v.moecpu,
    "gpulayers": v.gpulayers,
    "split": _optional(lambda x: list(v.split(x)) if x != [] else None),  # [] (written before v3): no split
    "devices": _optional(_uuids),
    "backend": lambda x: v.choice(x, "backend", v.BACKENDS),
    "executables": _executables,
    "host": v.host,
    "port": v.port,
    "objective": lambda x: v.choice(x, "objective", v.OBJECTIVES),
    "recent_models": lambda x: _str_list(x, "recent_models")[:MAX_RECENT],
    "geometry": _optional(lambda x: v.text(x, "geometry", 65536)),
    "nodes": _node_addresses,
    "overrides": _overrides,
    "threads": _optional(lambda x: v.integer(x, "threads", 1, 4096)),
    "use_mmap": _optional(_flag),
    "engine_options": lambda x: dict(v.engine_options(x if isinstance(x, dict) else _not_a_dict(x))),
}
assert set(_CHECKS) == {f.name for f in fields(UserSettings)}


def settings_path() -> Path:
    return config_dir() / "settings.json"


def check_fields(data: dict) -> tuple[UserSettings, list[str]]:
    """(settings with every bad field at its default, the names of the fields that were bad)."""
    kept, bad = {}, []
    for name, check in _CHECKS.items():
        if name in data:
            try:
                kept[name] = check(data[name])
            except v.InputError:
                bad.append(name)
    return UserSettings(**kept), bad


def load_settings(path: Path | None = None) -> tuple[UserSettings, str]:
    """(settings, a sentence to show the user or "")."""
    path = path or settings_path()
    remove_leftovers(path.parent, _TMP, older_than_s=_TMP_STALE_S)  # of an interrupted save
    notes = [] if v.folder_writable(path.parent) else [f"Your settings folder {path.parent} is read-only, so changes will not be kept."]
    try:
        st = v.regular_file(path, "Your settings file")
        if st.st_size > _MAX_BYTES:
            raise ValueError("too large")
        with open(path, "rb") as f:
            raw = f.read(_MAX_BYTES)
    except v.InputError as e:
        if not path.exists() and not path.is_symlink():
            return UserSettings(), " ".join(notes)
        return UserSettings(), " ".join(notes + [f"{e} Defaults are used."])
    except (OSError, ValueError) as e:
        return UserSettings(), " ".join(notes + [f"Your settings could not be read ({getattr(e, 'strerror', None) or e}); "
                                                 "defaults are used."])
    try:
        # undecodable bytes become lone surrogates, which the text checks reject field by field
        data = json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        s, bad = UserSettings(), ["everything"]
    else:
        s, bad = check_fields(data)
    if not bad:
        return s, " ".join(notes)
    aside = set_aside(path, raw)
    where = f" (the old file is kept as {aside.name})" if aside else ""
    what = "was damaged and has been replaced with defaults" if bad == ["everything"] else (
        f"had bad values ({', '.join(bad)}); those are back to their defaults and the rest is kept")
    try:
        save_settings(s, path)
    except SettingsSaveError:
        pass  # the folder is read-only: already said above
    return s, " ".join(notes + [f"Your settings file {what}{where}."])


def set_aside(path: Path, raw: bytes) -> Path | None:
    """Copy the damaged file to a new name, never over an earlier copy; None if it cannot be written."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        aside = path.with_name(f"settings.damaged-{stamp}{'' if n == 1 else f'-{n}'}.json")
        try:
            with open(aside, "xb") as f:  # "x": fails rather than replace an existing copy
                f.write(raw)
            return aside
        except FileExistsError:
            continue
        except OSError:
            return None
    return None


def save_settings(s: UserSettings, path: Path | None = None) -> None:
    """Write atomically; raises SettingsSaveError (an OSError) with one sentence when it cannot."""
    path = path or settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(s), indent=2).encode("utf-8"))
    except (OSError, ValueError, TypeError) as e:
        raise SettingsSaveError(f"Your settings could not be saved in {path.parent} "
                                f"({getattr(e, 'strerror', None) or e}).") from None
