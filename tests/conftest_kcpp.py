"""pytest plugin: the real koboldcpp 1.115.1 (CPU build), built once per machine (tests/kcpp_build.py).

In CI (CI=true) a build that cannot be made fails the tests that need it, loudly; elsewhere a machine
without the source tarball or a compiler skips them with the reason.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import kcpp_build  # noqa: E402


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def kcpp_tree() -> Path:
    """The folder holding the real koboldcpp.py and its built koboldcpp_default.so."""
    done = kcpp_build.built_tree()
    if done:
        return done
    skippable = not kcpp_build.TARBALL.is_file() or kcpp_build.missing_tools()
    if skippable and not _in_ci():
        why = (f"no koboldcpp source at {kcpp_build.TARBALL}" if not kcpp_build.TARBALL.is_file()
               else f"no {', '.join(kcpp_build.missing_tools())} to build koboldcpp")
        pytest.skip(why)
    try:
        return kcpp_build.build()
    except kcpp_build.BuildError as e:
        pytest.fail(f"The real koboldcpp could not be built: {e}", pytrace=False)


@pytest.fixture(scope="session")
def kcpp_script(kcpp_tree) -> Path:
    return kcpp_tree / "koboldcpp.py"
