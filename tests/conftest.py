import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def skeletons(tmp_path_factory):
    """Sparse skeleton GGUFs of the presets, written once per session (a few MB on disk)."""
    from phoenix_gui.model import write_skeleton

    root = tmp_path_factory.mktemp("skel")
    cache = {}

    def get(key):
        if key not in cache:
            cache[key] = write_skeleton(key, root / f"{key}.gguf")
        return cache[key]

    return get
