"""Where the shipped data files (rigs, model presets, GPU specs, icons) live: phoenix_gui/data.

The data sits inside the package so that a wheel, an sdist, an editable install and the frozen
build all carry it the same way (PyInstaller copies it to the same relative place).
"""

from __future__ import annotations

from pathlib import Path


def resources_dir() -> Path:
    here = Path(__file__).resolve().parent / "data"
    if here.is_dir():
        return here
    raise FileNotFoundError("Phoenix's data folder (phoenix_gui/data) is missing from this installation: reinstall Phoenix.")


def resource(*parts: str) -> Path:
    return resources_dir().joinpath(*parts)
