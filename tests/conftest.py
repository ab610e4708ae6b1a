import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# In CI, property tests draw the same examples every run (a red CI is a real regression, not a new
# random draw) and slow shared machines do not trip the per-example deadline; locally they explore.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")
pytest_plugins = ["conftest_kcpp"]  # the real koboldcpp build fixture (kcpp_tree)


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


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    """Every test gets its own config and data folders: no test reads or writes the user's."""
    monkeypatch.setenv("PHOENIX_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("PHOENIX_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture
def config_dir(user_dirs):
    return user_dirs / "config"


@pytest.fixture
def data_dir(user_dirs):
    return user_dirs / "data"


@pytest.fixture
def wiz(qtbot):
    """The demo wizard, shown at a normal size."""
    from phoenix_gui.ui.app import make_wizard

    w = make_wizard(demo=True, persist=False, measure=False)
    qtbot.addWidget(w)
    w.resize(1280, 860)
    w.show()
    return w


@pytest.fixture(scope="session")
def q32():
    """The seed's model: Qwen2.5-32B-Instruct Q4_K_M (preset, no file)."""
    from phoenix_gui.model import preset_model_info

    return preset_model_info("qwen2.5-32b-instruct-q4_k_m")


@pytest.fixture(scope="session")
def seed_rig():
    """The seed's rig: GTX 1050 Ti + RTX 2080 + GTX 1060 6GB + quad-channel DDR4 (simulated)."""
    from phoenix_gui.hardware import demo_rig_path, load_rig

    return load_rig(demo_rig_path())
