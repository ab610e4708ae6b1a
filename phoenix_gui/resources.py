"""Where the shipped data files (rigs, model presets, GPU specs) live."""

from __future__ import annotations

import sys
from pathlib import Path


def resources_dir() -> Path:
    # Frozen builds put resources next to the executable; a source checkout keeps them at the top.
    candidates = []
    if getattr(sys, "frozen", False):
        candidates.append(Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)) / "resources")
    here = Path(__file__).resolve().parent
    candidates += [here / "resources", here.parent / "resources"]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError("Phoenix's resources folder is missing from this installation.")


def resource(*parts: str) -> Path:
    return resources_dir().joinpath(*parts)
