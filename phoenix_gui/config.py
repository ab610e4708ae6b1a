"""User settings: last rig, model, context, split, executable, window geometry.

Stored as JSON in the user's config directory, written atomically (temp file + rename). A
corrupt file is moved aside and reported, never fatal.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAX_RECENT = 10


@dataclass
class UserSettings:
    rig_path: str | None = None
    model_path: str | None = None
    preset: str | None = None
    context: int = 4096
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

    def remember_model(self, path: str) -> None:
        self.recent_models = [path] + [p for p in self.recent_models if p != path][: MAX_RECENT - 1]


def config_dir() -> Path:
    env = os.environ.get("PHOENIX_CONFIG_DIR")
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir("phoenix", appauthor=False))


def settings_path() -> Path:
    return config_dir() / "settings.json"


def load_settings(path: Path | None = None) -> tuple[UserSettings, str]:
    """(settings, a sentence to show the user or "")."""
    path = path or settings_path()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return UserSettings(), ""
    except OSError as e:
        return UserSettings(), f"Your settings could not be read ({e.strerror or e}); defaults are used."
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        known = {k: v for k, v in data.items() if k in UserSettings.__dataclass_fields__}
        s = UserSettings(**known)
        _validate(s)
        return s, ""
    except (ValueError, TypeError):
        aside = path.with_name(f"settings.corrupt-{time.strftime('%Y%m%d-%H%M%S')}.json")
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        return UserSettings(), f"Your settings file was damaged and has been replaced with defaults (the old one is kept as {aside.name})."


def _validate(s: UserSettings) -> None:
    if not isinstance(s.context, int) or s.context < 256:
        raise ValueError("context")
    if not isinstance(s.recent_models, list) or not all(isinstance(p, str) for p in s.recent_models):
        raise ValueError("recent")
    if s.split is not None and not all(isinstance(x, (int, float)) for x in s.split):
        raise ValueError("split")
    if not isinstance(s.executables, dict):
        raise ValueError("executables")


def save_settings(s: UserSettings, path: Path | None = None) -> None:
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(s), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
