"""The Tune button on the split page with koboldcpp's stand-in (hidden cost law): the panel runs the tuner
off the GUI's back through a QTimer, shows progress, the table and the plot, the page then says it is
calibrated, the winner goes onto the sliders; Cancel leaves no process."""

import json
import time
from pathlib import Path

import psutil
from PySide6.QtCore import Qt

from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.ui.app import make_wizard
from machine_helpers import gone

FAKE = str(Path(__file__).with_name("fake_koboldcpp.py"))


def wizard(qtbot, skeletons, monkeypatch):
    path = skeletons("qwen2.5-7b-instruct-q4_k_m")
    rig = load_rig(demo_rig_path())
    monkeypatch.setenv("FAKE_KCPP_COST_LAW", json.dumps({
        "gpus": [[g.uuid, ms] for g, ms in zip(rig.gpus, (3.0, 1.2, 0.8))], "cpu_ms": 6.0, "hop_ms": 0.5,
        "base_ms": 1.0, "layers": 29, "output_x": 3.19}))  # Qwen2.5-7B's output: 3.19 layers' bytes
    w = make_wizard(rig_path=str(demo_rig_path()), model_path=str(path), persist=False, measure=False)
    qtbot.addWidget(w)
    st = w.state
    st.set_rig(st.rig)  # every card in play: the model opened on auto-fit's plan (issue 21), maybe on fewer
    st.set_executable(FAKE)
    st.set_port(free_port())
    st.set_context(2048)
    return w, st, w.page("split")


def test_the_tune_button_measures_learns_and_keeps_the_fastest(qtbot, skeletons, monkeypatch):
    w, st, page = wizard(qtbot, skeletons, monkeypatch)
    assert page.calibrated.text() == ""
    before = st.plan().predicted_tokens_per_s
    qtbot.mouseClick(page.tune, Qt.LeftButton)
    panel = page.tune_panel
    assert panel is not None and panel.isVisible() and "128 prompt tokens, then 32 generated" in panel.header.text()
    progress = []
    panel.timer.timeout.connect(lambda: progress.append(panel.bar.value()))
    qtbot.waitUntil(lambda: panel.tuner is not None and panel.tuner.state != "running", timeout=120000)
    t = panel.tuner
    assert t.state == "done", t.message
    assert panel.table.rowCount() == len(t.runs) == 6
    assert panel.table.item(5, 1).text() == "calibrated winner"
    assert len(panel.scatter.data) == 6 and any(0 < v < 1000 for v in progress)
    assert "times as fast as the predicted best" in panel.summary.text()
    # the slice runs are rows like the others, and the summary says what they are
    rows = [panel.table.item(i, 1).text() for i in range(panel.table.rowCount())]
    assert any(r.startswith("slice on ") for r in rows) and "A slice run loads only the model's first layers" in panel.summary.text()
    assert page.calibrated.text().startswith("calibrated on this PC (6 runs, ")
    assert st.plan().predicted_tokens_per_s != before  # later predictions use what was learned
    # the margin the recommendation keeps is shown (the stand-in logs no buffers: Phoenix's guess) and can be set
    assert panel.margin.text() == "sized from the runs"
    assert panel.margin_note.text().startswith("256 MiB kept free per GPU, Phoenix's guess: the engine logged no GPU")
    fastest = t.winner
    panel.margin.setValue(5000)  # more than the 1060 can keep free next to the model: another measured plan
    assert t.winner is not None and t.winner is not fastest and t.keeps_margin(t.winner.settings)
    assert not t.keeps_margin(fastest.settings) and t.recommended().margin_mib == 5000
    assert panel.margin_note.text().startswith("5000 MiB kept free per GPU, as you set it")
    panel.margin.setValue(panel.margin.maximum())  # no card keeps 16 GiB free: only a plan without GPUs could
    assert t.winner is None or t.winner.settings.gpulayers == 0
    assert panel.use_btn.isEnabled() == (t.winner is not None)
    if t.winner is None:
        assert "no measured plan keeps 16384 MiB free per GPU" in panel.status.text()
    panel.margin.setValue(panel.margin.minimum())  # back to what the runs measured
    assert t.winner is fastest
    assert t.winner is not None and panel.use_btn.isEnabled() and t.message.startswith("Kept: ")
    qtbot.mouseClick(panel.use_btn, Qt.LeftButton)
    assert st.layer_counts() == {2: 29}  # the GTX 1060 alone: the law's fastest
    assert abs(st.plan().predicted_tokens_per_s - t.winner.measured_tps) < 0.05 * t.winner.measured_tps
    panel.close()


def test_cancel_in_the_panel_leaves_nothing_running(qtbot, skeletons, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_LOAD_S", "20")
    w, st, page = wizard(qtbot, skeletons, monkeypatch)
    qtbot.mouseClick(page.tune, Qt.LeftButton)
    panel = page.tune_panel
    qtbot.waitUntil(lambda: panel.tuner is not None and panel.tuner._m is not None
                    and panel.tuner._m.launch.process is not None, timeout=30000)
    pid = panel.tuner._m.launch.process.pid
    assert psutil.pid_exists(pid) and "s left" in panel.left.text()
    t0 = time.monotonic()
    qtbot.mouseClick(panel.cancel_btn, Qt.LeftButton)
    assert time.monotonic() - t0 < 12
    assert panel.tuner.state == "cancelled" and gone([pid]) and not panel.timer.isActive()
    assert "cancelled" in panel.status.text()


def test_tune_without_a_model_file_says_so(qtbot):
    w = make_wizard(demo=True, persist=False, measure=False)
    qtbot.addWidget(w)
    page = w.page("split")
    qtbot.mouseClick(page.tune, Qt.LeftButton)
    assert page.tune_panel is None and page.error.text() == "Tuning needs a model file (the demo preset has none)."


def test_the_wizard_loads_the_calibration_by_key_and_says_when_it_no_longer_applies(qtbot, skeletons):
    from phoenix_gui.backends import calibrations as tune
    from phoenix_gui.hardware.calibration import Calibration

    rig = load_rig(demo_rig_path())
    tune.save(Calibration(gpu_scale={g.uuid: 2.0 for g in rig.gpus}, cpu_scale=2.0, runs=4, created=0.0,
                          key=tune.rig_key(rig, "koboldcpp", "1.115.1")))
    w = make_wizard(rig_path=str(demo_rig_path()), model_path=str(skeletons("qwen2.5-7b-instruct-q4_k_m")),
                    persist=False, measure=False)
    qtbot.addWidget(w)
    st, page = w.state, w.page("split")
    assert page.calibrated.text() == "calibrated on this PC (4 runs, 1970-01-01)"
    st.set_rig(rig)  # the split set_rig starts from, so the two predictions below are of one plan
    calibrated = st.plan().predicted_tokens_per_s
    st.set_rig(load_rig(Path(demo_rig_path()).with_name("gaming-upgrade-3090-2070.toml")))
    assert page.calibrated.text() == "" and not page.calibrated.isVisibleTo(page)  # another rig: simply not used
    st.set_rig(rig)
    assert page.calibrated.text().startswith("calibrated on this PC (4 runs")
    assert st.plan().predicted_tokens_per_s == calibrated
    st.set_backend("llama-server")
    assert page.calibrated.text() == ""  # no llama-server calibration on this rig
