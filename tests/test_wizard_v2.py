"""What a new user hit in the first wizard, each driven through the real widgets (pytest-qt)."""

import json
import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWizard

from phoenix_gui.hardware import demo_rig_path
from phoenix_gui.ui.app import make_wizard
from phoenix_gui.ui.ticks import handle_centre_x


def _title(w):
    return w.currentPage().title()


def test_enter_on_a_typed_path_reads_it_and_stays(wiz, qtbot, tmp_path):
    folder = tmp_path / "x.gguf"
    folder.mkdir()
    wiz.go_to("model")
    page = wiz.page("model")
    page.path.setFocus()
    page.path.setText(str(folder))
    qtbot.keyClick(page.path, Qt.Key_Return)
    assert _title(wiz) == "Model"
    qtbot.waitUntil(lambda: bool(wiz.state.model_error), timeout=10000)
    assert wiz.state.model is None and page.error.isVisible()
    wiz.next()
    assert _title(wiz) == "Model"  # nothing to plan: the previous model's bars are not shown


def test_next_reads_a_typed_path_before_leaving(wiz, qtbot, skeletons):
    path = str(skeletons("tiny-llama-f16"))
    wiz.go_to("model")
    page = wiz.page("model")
    page.path.setText(path)
    wiz.next()  # the demo preset is loaded, but the typed file is not read yet
    assert _title(wiz) == "Model"
    qtbot.waitUntil(lambda: wiz.state.model_path == path and wiz.state.model is not None, timeout=10000)
    wiz.next()
    assert _title(wiz) == "Context & cache"


def test_enter_in_number_boxes_commits_without_changing_page(wiz, qtbot):
    wiz.go_to("context")
    spin = wiz.page("context").spin
    spin.setFocus()
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "8192")
    qtbot.keyClick(spin.lineEdit(), Qt.Key_Return)
    assert _title(wiz) == "Context & cache" and wiz.state.context == 8192
    wiz.go_to("split")
    row = next(iter(wiz.page("split").rows.values()))
    row.percent.setFocus()
    row.percent.lineEdit().selectAll()
    qtbot.keyClicks(row.percent.lineEdit(), "16.7")
    qtbot.keyClick(row.percent.lineEdit(), Qt.Key_Return)
    assert _title(wiz) == "Split"
    assert wiz.state.percent(row.gi) == pytest.approx(16.7)  # typed decimals are kept
    assert row.percent.value() == pytest.approx(16.7)


def test_a_plan_that_does_not_fit_shows_no_speed(wiz):
    wiz.go_to("split")
    page = wiz.page("split")
    wiz.state.set_gpulayers(None)
    wiz.state.set_split_text("4 8 6")
    assert not wiz.state.plan().fits
    assert page.speed.text() == "does not fit"
    assert "tokens/s" not in page.speed.text() and "×" not in page.compare.text()


def test_a_baseline_that_would_not_load_gets_no_ratio(wiz, tmp_path):
    k = tmp_path / "crash.kcpps"
    k.write_text(json.dumps({"gpulayers": 99, "tensor_split": [4, 8, 6], "contextsize": 4096, "usecuda": ["normal"]}))
    wiz.go_to("model")
    wiz.page("model").import_kcpps(str(k))
    assert wiz.state.baseline is not None and not wiz.state.baseline.fits
    wiz.state.run_auto_fit("fastest")
    wiz.go_to("split")
    text = wiz.page("split").compare.text()
    assert "would not load" in text and "×" not in text


def test_short_card_bar_overflows_past_its_capacity_line(wiz):
    wiz.go_to("split")
    page = wiz.page("split")
    wiz.state.set_gpulayers(None)
    wiz.state.set_split_text("4 8 6")
    head, bar, why = page.bar_rows[0]
    assert bar.device.state == "short"
    assert bar.capacity_x() < bar.width() - 10
    img = bar.grab().toImage()
    x = int((bar.capacity_x() + bar.width()) / 2)
    c = img.pixelColor(x, img.height() // 2)
    assert c.red() > c.green() + 40  # the overflow is drawn in red past the line
    head_states = [w for w in ("fits", "TIGHT", "SHORT") if w in head.text()]
    assert head_states == ["SHORT"]  # one state per card
    assert "capacity" in page.legend.text() and "kept free" in page.legend.text()
    assert "used by other programs" in page.legend.text()


def test_layer_controls_stay_usable_at_the_minimum_size(wiz, qtbot):
    wiz.go_to("split")
    wiz.resize(640, 480)
    QApplication.processEvents()
    assert wiz.width() >= wiz.minimumWidth() and wiz.minimumWidth() >= 800  # issue 21: 800 x 600, scrolling
    page = wiz.page("split")
    for row in page.rows.values():
        assert row.slider.width() >= 150
        assert row.slider.maximum() == wiz.state.offloaded_layers  # the slider moves in whole layers


def test_tensor_split_text_box(wiz, qtbot):
    wiz.go_to("split")
    page = wiz.page("split")
    wiz.state.set_gpulayers(40)
    page.split_edit.setFocus()
    page.split_edit.selectAll()
    qtbot.keyClicks(page.split_edit, "1.5 4.5 3")
    qtbot.keyClick(page.split_edit, Qt.Key_Return)
    assert _title(wiz) == "Split"
    assert [d.layers for d in wiz.state.plan().gpus] == [7, 20, 13]
    page.split_edit.setText("1 2 3 4")
    page.split_edit.editingFinished.emit()
    assert page.error.isVisible() and "one per GPU" in page.error.text()


def test_context_labels_sit_over_their_values(wiz, qtbot, skeletons):
    wiz.go_to("context")
    page = wiz.page("context")
    ticked = page.ticked
    QApplication.processEvents()
    shown = 0
    for value, button in ticked._ticks:
        if not button.isVisible():
            continue
        shown += 1
        page.slider.setValue(value)
        x = ticked.tick_centre_x(value)
        assert abs(x - handle_centre_x(page.slider, page.slider.value())) <= 2
        assert wiz.state.context == value * 256
    assert shown >= 4
    label = next(b for v, b in ticked._ticks if v * 256 == 32768)
    qtbot.mouseClick(label, Qt.LeftButton)
    assert wiz.state.context == 32768 and page.slider.value() * 256 == 32768


def test_cpu_only_plan_split_page(qtbot, tmp_path):
    rig = tmp_path / "cpu.toml"
    rig.write_text('name = "laptop"\n[system]\nram_gib = 64\nram_bandwidth_gbs = 40\n')
    w = make_wizard(rig_path=str(rig), persist=False, measure=False)
    qtbot.addWidget(w)
    w.show()
    from phoenix_gui.model import preset_model_info

    w.state.set_model(preset_model_info("qwen2.5-32b-instruct-q4_k_m"), None)
    w.go_to("split")
    page = w.page("split")
    assert page.layers_spin.value() == 0 and not page.layers_spin.isEnabled() and not page.layers.isEnabled()
    heads = [h.text() for h, _, _ in page.bar_rows]
    assert len(heads) == 1 and "CPU" in heads[0]
    assert "GPU" not in " ".join(w.state.plan().reasons())


def test_two_quick_loads_the_last_choice_wins(wiz, qtbot, skeletons):
    slow_then_fast = []
    task = wiz.page("model").task
    task.run(lambda c: (time.sleep(0.6), "first")[1], slow_then_fast.append)
    task.run(lambda c: "second", slow_then_fast.append)
    qtbot.wait(1200)
    assert slow_then_fast == ["second"]
    a, b = str(skeletons("tiny-llama-f16")), str(skeletons("llama-3.1-8b-instruct-q4_k_m"))
    page = wiz.page("model")
    page.load(b)
    page.load(a)
    qtbot.waitUntil(lambda: wiz.state.model_path == a and page.loading is None, timeout=15000)
    qtbot.wait(300)
    assert wiz.state.model_path == a and wiz.state.model.name == wiz.state.model.name


def test_escape_asks_while_a_server_runs(wiz, qtbot, monkeypatch, tmp_path):
    from PySide6.QtWidgets import QMessageBox

    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: (asked.append(a[2]), QMessageBox.No)[1])
    qtbot.keyClick(wiz, Qt.Key_Escape)  # nothing runs: closes without asking
    assert asked == [] and not wiz.isVisible()


def test_simulated_rig_is_labelled_on_every_page(wiz):
    for key in ("hardware", "model", "context", "split", "launch", "monitor"):
        assert "Simulated rig" in wiz.page(key).subTitle(), key


def test_demo_is_not_remembered_as_this_pc(qtbot, config_dir):
    w = make_wizard(demo=True, measure=False)
    qtbot.addWidget(w)
    w.close()
    w2 = make_wizard(measure=False)
    qtbot.addWidget(w2)
    assert not w2.state.rig.simulated
    assert "Simulated" not in w2.page("hardware").subTitle()


def test_rig_path_in_old_settings_is_not_reopened(qtbot, config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / "settings.json").write_text(json.dumps({"rig_path": str(demo_rig_path())}))
    w = make_wizard(measure=False)
    qtbot.addWidget(w)
    assert not w.state.rig.simulated
    assert w.button(QWizard.NextButton) is not None


def test_escape_while_a_real_server_runs_asks_and_no_keeps_it(qtbot, tmp_path, monkeypatch):
    import psutil
    from PySide6.QtWidgets import QMessageBox

    from phoenix_gui.backends.processes.ports import free_port
    from phoenix_gui.model import write_skeleton

    monkeypatch.setenv("PHOENIX_DATA_DIR", str(tmp_path / "data"))
    model = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf", random_data=True)
    rig = tmp_path / "cpu.toml"
    rig.write_text('name = "this PC"\n[system]\nram_gib = 16\nram_bandwidth_gbs = 20\n')
    w = make_wizard(rig_path=str(rig), model_path=str(model), persist=False, measure=False)
    qtbot.addWidget(w)
    w.show()
    st = w.state
    st.set_backend("llama-server", None)
    st.set_port(free_port())
    st.set_context(2048)
    assert w.session.start() is None
    qtbot.waitUntil(lambda: w.session.outcome is not None and w.session.outcome.ok, timeout=60000)
    pid = w.session.launch.process.pid
    answers = [QMessageBox.No, QMessageBox.Yes]
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: (asked.append(a[2]), answers.pop(0))[1])
    qtbot.keyClick(w, Qt.Key_Escape)
    assert len(asked) == 1 and "server is running" in asked[0]
    assert w.isVisible() and w.session.running and psutil.pid_exists(pid)
    qtbot.keyClick(w, Qt.Key_Escape)
    assert len(asked) == 2 and not w.isVisible()
    qtbot.waitUntil(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                    timeout=15000)


def test_launch_page_refuses_a_bad_host_in_one_sentence(wiz, qtbot):
    wiz.go_to("launch")
    page = wiz.page("launch")
    page.host.setFocus()
    page.host.selectAll()
    qtbot.keyClicks(page.host, "my host")
    qtbot.keyClick(page.host, Qt.Key_Return)
    assert _title(wiz) == "Launch" and wiz.state.host == "127.0.0.1"
    assert page.status.isVisible() and "not a host name" in page.status.text()
    assert page.host.text() == "127.0.0.1"  # the refused text is replaced by what is in force
    page.port.setValue(5123)
    assert wiz.state.port == 5123 and "--port 5123" in page.cmd.toPlainText()


def test_export_replaces_a_file_the_dialog_asked_about_but_never_a_model(wiz, tmp_path, skeletons):
    wiz.go_to("launch")
    page = wiz.page("launch")
    old = tmp_path / "mine.kcpps"
    old.write_text("{}")
    assert page.export_to("kcpps", str(old)).startswith("Saved")
    assert json.loads(old.read_text())["gpulayers"] == wiz.state.plan().gpulayers
    model = skeletons("tiny-llama-f16")
    before = model.read_bytes()[:64]
    msg = page.export_to("sh", str(model))
    assert msg.startswith("Could not save") and model.read_bytes()[:64] == before


def test_sigterm_closes_the_wizard_cleanly(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PHOENIX_CONFIG_DIR": str(tmp_path / "cfg")}
    p = subprocess.Popen([sys.executable, "-m", "phoenix_gui", "--demo"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        time.sleep(6)  # the window is up (a few seconds on 2 cores)
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0  # closed through the window, not killed by the signal
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert (tmp_path / "cfg" / "settings.json").exists()  # the close path saved the settings
