"""Auto-fit's objectives mean what they say (issue #21 item 5): "most headroom" gives the tightest card real
room for a bounded speed cost, "longest context" finds the longest context that fits at all; the CLI's
--auto gives the same answers as the wizard's auto-fit."""

import json
import subprocess
import sys

from phoenix_gui.planner import PlanSettings
from phoenix_gui.planner.autofit import HEADROOM_SPEED_COST, auto_fit

MIB = 1 << 20


def _smallest_room(plan):
    used = [d for d in plan.gpus if d.layers]
    return min(d.headroom_bytes for d in used), min(d.headroom_bytes / d.usable_bytes for d in used)


def test_most_headroom_gives_the_tightest_card_real_room(q32, seed_rig):
    fast = auto_fit(q32, seed_rig, PlanSettings(context=4096), "fastest").plan
    room = auto_fit(q32, seed_rig, PlanSettings(context=4096), "headroom").plan
    assert room.fits and _smallest_room(fast)[0] < 100 * MIB  # the seed: 39 MiB left on the 4 GB card
    assert _smallest_room(room)[0] >= 256 * MIB and _smallest_room(room)[1] >= 0.05
    assert room.predicted_tokens_per_s >= fast.predicted_tokens_per_s * (1 - HEADROOM_SPEED_COST) - 1e-9
    assert room.settings.context == fast.settings.context
    assert any("kept free" in line for line in room.explanation)


def test_longest_context_finds_the_longest_that_fits(q32, seed_rig):
    fit = auto_fit(q32, seed_rig, PlanSettings(context=4096), "context")
    assert fit.plan.fits and fit.settings.context == q32.n_ctx_train == 32768  # fewer layers on the GPUs: it fits
    assert fit.plan.explanation[0].startswith("Context: 32,768 tokens — the longest that fits")


def _cli(*args):
    r = subprocess.run([sys.executable, "-m", "phoenix_gui", "plan", "--demo", "--json", *args], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_cli_auto_headroom_and_context_are_the_wizards():
    fast, room, ctx = _cli("--auto", "fastest"), _cli("--auto", "headroom"), _cli("--auto", "context")
    tight = lambda d: min(x["usable_bytes"] - x["total_bytes"] for x in d["devices"] if x["kind"] == "gpu")  # noqa: E731
    assert tight(room) >= 256 * MIB > tight(fast)
    assert room["tensor_split"] != fast["tensor_split"]
    assert ctx["context"] == 32768


def test_the_split_page_shows_the_context_auto_fit_found(wiz, qtbot):
    from PySide6.QtCore import Qt

    wiz.go_to("split")
    page = wiz.page("split")
    page.objective.setCurrentIndex(page.objective.findData("context"))
    qtbot.mouseClick(page.autofit, Qt.LeftButton)
    assert wiz.state.context == 32768
    assert "32,768 tokens of context" in page.compare.text()
    assert "the longest that fits" in page.explain.text()


# --- item 17: one default context, the same in the CLI and the wizard ---

def test_one_default_context_in_the_cli_and_the_wizard(qtbot, tmp_path):
    import dataclasses

    from phoenix_gui.model import write_skeleton
    from phoenix_gui.model.presets import load_preset
    from phoenix_gui.planner.settings import default_context
    from phoenix_gui.ui.app import make_wizard

    preset = dataclasses.replace(load_preset("tiny-llama-f16"), n_ctx_train=2048)  # a model trained on 2048 tokens
    path = str(write_skeleton(preset, tmp_path / "short-trained.gguf"))
    r = subprocess.run([sys.executable, "-m", "phoenix_gui", "plan", path, "--json", "--no-bandwidth"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["context"] == 2048 == default_context(2048)
    assert "the model was trained on 2,048" in r.stderr  # said, not silent
    w = make_wizard(model_path=path, persist=False, measure=False)
    qtbot.addWidget(w)
    assert w.state.context == 2048
    big = subprocess.run([sys.executable, "-m", "phoenix_gui", "plan", "--demo", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert json.loads(big.stdout)["context"] == 4096 == default_context(32768) and "trained" not in big.stderr
