"""The real Qt wizard, offscreen (pytest-qt)."""

import json
import os

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWizard

from phoenix_gui.hardware import demo_rig_path
from phoenix_gui.planner import make_plan
from phoenix_gui.ui.app import make_wizard
from phoenix_gui.ui.membar import STATUS_COLOUR
from phoenix_gui.ui.wizard import PAGES


def test_walk_every_page_forward_and_back(wiz, qtbot):
    seen = []
    for key in PAGES:
        seen.append(wiz.currentPage().title())
        if key != PAGES[-1]:
            qtbot.mouseClick(wiz.button(QWizard.NextButton), Qt.LeftButton)
    assert seen == ["Hardware", "Model", "Context & cache", "Split", "Launch", "Monitor"]
    for _ in PAGES[:-1]:
        qtbot.mouseClick(wiz.button(QWizard.BackButton), Qt.LeftButton)
    assert wiz.currentPage().title() == "Hardware"


def test_window_resizes_down_to_1024x700(wiz):
    wiz.resize(1024, 700)
    assert wiz.minimumSize().width() <= 1024 and wiz.minimumSize().height() <= 700


def test_slider_shows_exactly_the_planners_numbers(wiz, qtbot):
    wiz.go_to("split")
    page = wiz.page("split")
    st = wiz.state
    st.set_gpulayers(40)
    gi = st.devices[1]
    row = page.rows[gi]
    row.slider.setValue(20)  # 20 whole layers on the second card
    expected = make_plan(st.model, st.rig, st.settings())
    assert expected.gpus[1].layers == 20 and sum(d.layers for d in expected.gpus) == 40
    for (head, bar, why), d in zip(page.bar_rows, expected.devices):
        assert bar.device.total_bytes == d.total_bytes and bar.device.layers == d.layers
        assert f"{d.total_bytes / (1 << 20):,.0f} MiB" in head.text()
    assert expected.fits and page.speed.text() == f"{expected.predicted_tokens_per_s:.1f} tokens/s"
    assert row.layers.value() == 20 and row.percent.value() == pytest.approx(50.0)


def test_lock_a_gpu_and_move_another(wiz):
    wiz.go_to("split")
    page = wiz.page("split")
    st = wiz.state
    a, b, c = st.devices
    page.rows[b].lock.setChecked(True)
    kept = st.percent(b)
    assert not page.rows[b].slider.isEnabled()
    page.rows[a].percent.setValue(10.0)  # spin box
    assert st.percent(b) == pytest.approx(kept)
    assert st.percent(a) == pytest.approx(10.0)
    assert page.rows[c].percent.value() == pytest.approx(100 - kept - 10, abs=0.006)


def test_keyboard_moves_a_slider(wiz, qtbot):
    wiz.go_to("split")
    page = wiz.page("split")
    gi = wiz.state.devices[0]
    s = page.rows[gi].slider
    before = wiz.state.layer_counts()[gi]
    s.setFocus()
    qtbot.keyClick(s, Qt.Key_Right)
    assert wiz.state.layer_counts()[gi] == before + 1  # one key, one whole layer
    qtbot.keyClick(s, Qt.Key_PageUp)
    assert wiz.state.layer_counts()[gi] == before + 5


def test_oom_configuration_turns_the_bar_red_with_the_reason(wiz):
    wiz.go_to("split")
    page = wiz.page("split")
    st = wiz.state
    st.set_split_text("4 8 6")
    head, bar, why = page.bar_rows[0]
    assert bar.device.state == "short"
    assert why.isVisible() and "run out of memory" in why.text()  # under its bar: the name and MiB are above it
    assert "SHORT by" in head.text() and "GTX 1050 Ti" in head.text() and "MiB" in head.text()
    assert head.palette().color(head.foregroundRole()).name().lower() == STATUS_COLOUR["short"].lower()
    img = bar.grab().toImage()
    edge = img.pixelColor(2, img.height() // 2)
    assert edge.red() > edge.green() + 60 and edge.red() > edge.blue() + 60  # the red outline


def test_autofit_sets_sliders_to_the_planners_result(wiz, qtbot):
    from phoenix_gui.planner.autofit import auto_fit

    wiz.go_to("split")
    page = wiz.page("split")
    qtbot.mouseClick(page.autofit, Qt.LeftButton)
    st = wiz.state
    expect = auto_fit(st.model, st.rig, st.settings().with_(tensor_split=None, gpulayers=None, devices=None), "fastest")
    assert st.plan().fits
    assert [d.layers for d in st.plan().gpus] == [int(x) for x in expect.settings.tensor_split]
    total = sum(expect.settings.tensor_split)
    for gi, c in zip(expect.settings.devices, expect.settings.tensor_split):
        assert page.rows[gi].percent.value() == pytest.approx(100 * c / total, abs=0.006)
        assert page.rows[gi].layers.value() == c
    assert page.layers_spin.value() == expect.settings.gpulayers
    assert "Every device fits" in page.verdict.text() and "fastest memory" in page.explain.text()


def test_broken_model_shows_the_inline_error(wiz, qtbot, tmp_path):
    bad = tmp_path / "brøken model.gguf"
    bad.write_bytes(b"definitely not a model" * 100)
    wiz.go_to("model")
    page = wiz.page("model")
    page.load(str(bad))
    qtbot.waitUntil(lambda: bool(wiz.state.model_error), timeout=10000)
    assert page.error.isVisible() and "not a GGUF" in page.error.text()
    assert "Traceback" not in page.error.text()


def test_loading_a_real_file_off_the_gui_thread(wiz, qtbot, skeletons):
    path = str(skeletons("llama-3.1-8b-instruct-q4_k_m"))
    wiz.go_to("model")
    page = wiz.page("model")
    page.load(path)
    qtbot.waitUntil(lambda: wiz.state.model_path == path and wiz.state.model is not None, timeout=15000)
    assert page.fields["name"].text() == "Meta-Llama-3.1-8B-Instruct"
    assert not page.busy.isVisible()


def test_launch_page_command_and_exports(wiz, tmp_path):
    wiz.state.run_auto_fit("fastest")
    wiz.go_to("launch")
    page = wiz.page("launch")
    text = page.cmd.toPlainText()
    assert "--gpulayers" in text and "--tensor_split" in text and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in text
    assert not page.launch.isEnabled()  # the demo model is a preset without a file: nothing to launch
    assert "choose a real .gguf" in page.launch.toolTip()
    k = tmp_path / "out dir" / "a b.kcpps"
    k.parent.mkdir()
    assert page.export_to("kcpps", str(k)).startswith("Saved")
    assert json.loads(k.read_text())["gpulayers"] == wiz.state.plan().gpulayers
    sh = tmp_path / "run.sh"
    page.export_to("sh", str(sh))
    assert os.access(sh, os.X_OK)
    page.host.setText("0.0.0.0")
    page.host.editingFinished.emit()
    assert "exposes the server" in page.warn.text()


def test_no_gpu_rig_shows_a_banner_and_plans_cpu_only(qtbot, tmp_path):
    rig = tmp_path / "cpu.toml"
    rig.write_text('name = "laptop"\n[system]\nram_gib = 32\nram_bandwidth_gbs = 40\n')
    w = make_wizard(rig_path=str(rig), persist=False, measure=False)
    qtbot.addWidget(w)
    w.show()
    assert w.page("hardware").banner.isVisible() and "No NVIDIA GPU" in w.page("hardware").banner.text()
    w.state.set_model(__import__("phoenix_gui.model", fromlist=["x"]).preset_model_info("tiny-llama-f16"), None)
    assert w.state.plan().gpus == [] and w.state.plan().fits


def test_settings_survive_a_restart(qtbot, config_dir, skeletons):
    path = str(skeletons("tiny-llama-f16"))
    w = make_wizard(rig_path=str(demo_rig_path()), model_path=path, measure=False)
    qtbot.addWidget(w)
    w.state.set_context(2048)
    w.state.set_cache_type("q8_0")
    w.state.set_port(5099)
    w.close()
    assert (config_dir / "settings.json").exists()
    w2 = make_wizard(measure=False)
    qtbot.addWidget(w2)
    st = w2.state
    assert st.model_path == path and st.context == 2048 and st.cache_type == "q8_0" and st.port == 5099
    assert not st.rig.simulated  # a simulated rig is never reopened as this PC


def test_corrupt_settings_file_is_reported_not_fatal(qtbot, config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / "settings.json").write_text("{{{ garbage")
    w = make_wizard(demo=True, measure=False)
    qtbot.addWidget(w)
    assert "damaged" in w.page("hardware").banner.text()


def test_kcpps_import_shows_what_you_had_before(wiz, tmp_path):
    k = tmp_path / "mine.kcpps"
    k.write_text(json.dumps({"gpulayers": 40, "tensor_split": [1.5, 4.5, 3], "contextsize": 4096, "usecuda": ["normal"]}))
    wiz.go_to("model")
    wiz.page("model").import_kcpps(str(k))
    wiz.go_to("split")
    page = wiz.page("split")
    assert "What you had before (mine.kcpps)" in page.compare.text()
    wiz.state.run_auto_fit("fastest")
    ratio = float(page.compare.text().split("now ")[1].split("×")[0])
    assert ratio >= 1.25


def test_screenshot_command_writes_a_png(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "split.png"
    r = subprocess.run([sys.executable, "-m", "phoenix_gui", "--demo", "--screenshot", "split", str(out)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    from PySide6.QtGui import QImage

    img = QImage(str(out))
    assert img.width() >= 1200 and img.height() >= 800


def test_qt_binding_keeps_none_alive():
    """PySide6 6.12.0 on Python < 3.12 decrefs None on every void call and aborts the app after a
    few thousand updates; the pinned version must not."""
    import sys

    from PySide6.QtWidgets import QLabel

    lab = QLabel()
    before = sys.getrefcount(None)
    for i in range(2000):
        lab.setText(str(i))
    assert sys.getrefcount(None) - before > -100


def test_next_needs_a_model(qtbot, tmp_path):
    w = make_wizard(rig_path=str(demo_rig_path()), persist=False, measure=False)
    qtbot.addWidget(w)
    w.show()
    w.next()
    assert w.currentPage().title() == "Model"
    assert not w.button(QWizard.NextButton).isEnabled()
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"nope")
    w.page("model").load(str(bad))
    qtbot.waitUntil(lambda: bool(w.state.model_error), timeout=10000)
    assert not w.button(QWizard.NextButton).isEnabled()


def test_drop_a_gguf_onto_the_window(wiz, qtbot, skeletons):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    path = str(skeletons("tiny-llama-f16"))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(path)])
    ev = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    wiz.dropEvent(ev)
    qtbot.waitUntil(lambda: wiz.state.model_path == path and wiz.state.model is not None, timeout=10000)
    assert wiz.currentPage().title() == "Model"
