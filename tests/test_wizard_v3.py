"""Issue #21 (wizard v3): what a new user still hit, each driven through the real widgets (pytest-qt)."""

import dataclasses
import json
import stat
import sys
from pathlib import Path

import psutil
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from phoenix_gui.backends.nodes import INFO_PORT_OFFSET
from phoenix_gui.backends.processes.ports import free_port_with
from phoenix_gui.config import load_settings
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.ui.app import make_wizard
from test_wizard_cluster import a_node

FAKE_RPC = Path(__file__).with_name("fake_rpc_server.py")


def _rpc_server_exe(tmp_path) -> str:
    """The stand-in under the name Phoenix recognises as llama.cpp's rpc-server."""
    exe = tmp_path / "rpc-server"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_RPC} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


# --- 1: closing while sharing asks, "No" keeps the share ---

def test_escape_while_sharing_asks_and_no_keeps_sharing(wiz, qtbot, tmp_path, monkeypatch):
    panel = wiz.page("hardware").show_share()
    panel.exe.setText(_rpc_server_exe(tmp_path))
    panel.port.setValue(free_port_with([INFO_PORT_OFFSET]))
    qtbot.mouseClick(panel.button, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.host is not None or not panel.sharing, timeout=30000)
    assert panel.host is not None, panel.error.text()
    pid = panel.host._proc.pid
    answers, asked = [QMessageBox.No, QMessageBox.Yes], []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: (asked.append(a[2]), answers.pop(0))[1])
    wiz.activateWindow()
    qtbot.keyClick(wiz, Qt.Key_Escape)
    assert len(asked) == 1 and "shares its GPUs" in asked[0]
    assert wiz.isVisible() and panel.sharing and psutil.pid_exists(pid)
    qtbot.keyClick(wiz, Qt.Key_Escape)
    assert len(asked) == 2 and not wiz.isVisible() and not panel.sharing
    qtbot.waitUntil(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                    timeout=15000)


# --- 2: every settings field written on close reads back, on every rig shape ---

def _this_pc(monkeypatch, gpus: int):
    """The seed rig's first `gpus` cards as this PC's own (detected, not simulated)."""
    rig = load_rig(demo_rig_path())
    rig = dataclasses.replace(rig, name="this PC", simulated=False, gpus=rig.gpus[:gpus])
    monkeypatch.setattr("phoenix_gui.ui.app.detect_rig", lambda **k: rig)
    return rig


@pytest.mark.parametrize("shape", ["no GPU", "one GPU", "three GPUs", "three GPUs + another PC"])
def test_every_settings_field_round_trips_on_every_rig_shape(qtbot, config_dir, monkeypatch, skeletons, shape):
    _this_pc(monkeypatch, {"no GPU": 0, "one GPU": 1}.get(shape, 3))
    model = str(skeletons("tiny-llama-f16"))
    w = make_wizard(model_path=model, measure=False)
    qtbot.addWidget(w)
    st = w.state
    if "another PC" in shape:
        st.add_node(a_node(st.rig, address="127.0.0.1:9"))
    for i in range(len(st.rig.gpus)):
        st.set_included(i, True)  # auto-fit may have opened on fewer cards: every card in play
    if len(st.rig.gpus) > 1:
        st.set_included(st.devices[-1], False)
        st.move_gpu(st.devices[-1], -1)
        st.set_split_text(" ".join(str(k + 2) for k in range(len(st.devices))))
    st.set_context(1024)
    st.set_cache_type("q8_0")
    st.set_flash_attn(False)
    st.set_batch(256)
    st.set_gpulayers(7 if st.devices else None)
    st.set_backend("llama-server", "/opt/llama/llama-server")
    st.set_host("127.0.0.2")
    st.set_port(5123)
    st.set_objective("headroom")
    w.close()
    written = json.loads((config_dir / "settings.json").read_text())
    us, notice = load_settings()
    assert notice == ""  # what Phoenix wrote it reads back without a word
    assert json.loads(json.dumps(dataclasses.asdict(us))) == written
    assert not list(config_dir.glob("settings.damaged-*"))
    w2 = make_wizard(measure=False)
    qtbot.addWidget(w2)
    s2 = w2.state
    assert not w2.page("hardware").banner.text().startswith("Your settings")
    for name in ("context", "cache_type", "flash_attn", "batch", "backend", "executable", "host", "port", "objective",
                 "model_path"):
        assert getattr(s2, name) == getattr(st, name), name
    local = [i for i in st.devices if not st.rig.gpus[i].is_remote]
    assert [s2.rig.gpus[i].uuid for i in s2.devices if not s2.rig.gpus[i].is_remote] == \
        [st.rig.gpus[i].uuid for i in local]
    if local:
        assert [s2.shares[i] for i in s2.devices] == pytest.approx([st.shares[i] for i in local])
    assert s2.gpulayers == (st.gpulayers if local else s2.gpulayers)
    assert us.nodes == [n.address for n in st.nodes]
    w2.close()
    assert load_settings()[1] == ""  # and the second start's save reads back too


def test_an_old_empty_split_is_no_split_not_a_bad_value(config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / "settings.json").write_text(json.dumps({"split": [], "devices": [], "context": 2048}))
    us, notice = load_settings()
    assert notice == "" and us.split is None and us.context == 2048


# --- 3: no handler outlives the widget it was made for ---

def test_cycling_cards_many_times_then_autofit_raises_nothing(wiz, qtbot):
    st = wiz.state
    wiz.go_to("split")
    listeners = len(st._listeners)
    table = wiz.page("hardware").table
    for _ in range(4):
        for row in range(2):
            for tick in (Qt.Unchecked, Qt.Checked):
                wiz.go_to("hardware")
                table.item(row, 0).setCheckState(tick)
                wiz.go_to("split")  # the split page rebuilds its rows for the new set of cards
                qtbot.wait(10)  # deleteLater runs in the event loop, as for a user
                st.set_included(st.order[row], tick == Qt.Unchecked)  # and once more while it is shown
                qtbot.wait(10)
                st.set_included(st.order[row], tick == Qt.Checked)
    wiz.go_to("split")
    page = wiz.page("split")
    qtbot.mouseClick(page.autofit, Qt.LeftButton)
    qtbot.wait(20)
    assert not page.error.isVisible(), page.error.text()
    assert len(st._listeners) == listeners  # the replaced rows' bindings are gone, not piling up
    row = next(iter(page.rows.values()))
    row.slider.setValue(row.slider.value() - 1)  # the live rows still drive the state
    assert st.layer_counts()[row.gi] == row.slider.value()


# --- 4: a locked card keeps its layers ---

def test_a_locked_card_keeps_its_layers_when_another_is_unticked(wiz, qtbot):
    st = wiz.state
    st.run_auto_fit("fastest")
    wiz.go_to("split")
    page = wiz.page("split")
    a, b, c = st.devices
    qtbot.mouseClick(page.rows[b].lock, Qt.LeftButton)
    kept = st.layer_counts()[b]
    wiz.go_to("hardware")
    table = wiz.page("hardware").table
    table.item(st.order.index(c), 0).setCheckState(Qt.Unchecked)
    assert st.layer_counts()[b] == kept and b in st.locked
    table.item(st.order.index(c), 0).setCheckState(Qt.Checked)
    assert st.layer_counts()[b] == kept
    st.set_gpulayers(st.offloaded_layers - 3)
    assert st.layer_counts()[b] == kept


def test_dragging_the_only_unlocked_card_moves_its_value(wiz, qtbot):
    st = wiz.state
    st.run_auto_fit("fastest")
    wiz.go_to("split")
    page = wiz.page("split")
    a, b, c = st.devices
    for k in (a, b):
        qtbot.mouseClick(page.rows[k].lock, Qt.LeftButton)
    held = {k: st.layer_counts()[k] for k in (a, b)}
    slider = page.rows[c].slider
    slider.setFocus()
    before = st.layer_counts()[c]
    qtbot.keyClick(slider, Qt.Key_Left)
    assert st.layer_counts()[c] == before - 1 == slider.value()  # the layer goes to the CPU
    assert {k: st.layer_counts()[k] for k in (a, b)} == held
    qtbot.keyClick(slider, Qt.Key_Right)
    assert st.layer_counts()[c] == before == slider.value()
    slider.setValue(slider.maximum())  # past what memory or the model allows: the handle shows what was kept
    assert slider.value() == st.layer_counts()[c]


# --- 6: a tune while the wizard's own server runs ---

def test_tune_while_the_wizards_server_runs_picks_a_free_port(qtbot, skeletons, monkeypatch):
    from test_tune_panel import wizard

    monkeypatch.setenv("FAKE_KCPP_LOAD_S", "20")  # the tune's first run is still loading when it is cancelled
    w, st, page = wizard(qtbot, skeletons, monkeypatch)
    monkeypatch.setenv("FAKE_KCPP_LOAD_S", "0")
    assert w.session.start() is None
    qtbot.waitUntil(lambda: w.session.outcome is not None and w.session.outcome.ok, timeout=60000)
    monkeypatch.setenv("FAKE_KCPP_LOAD_S", "20")
    qtbot.mouseClick(page.tune, Qt.LeftButton)
    panel = page.tune_panel
    qtbot.waitUntil(lambda: panel.tuner is not None and (panel.tuner.state != "running" or (
        panel.tuner._m is not None and panel.tuner._m.launch.process is not None)), timeout=30000)
    assert panel.tuner.state == "running", panel.status.text()
    assert panel.tuner._m.launch.port != st.port and w.session.running
    qtbot.mouseClick(panel.cancel_btn, Qt.LeftButton)
    assert panel.tuner.state == "cancelled" and panel.bar.value() < panel.bar.maximum()
    w.session.stop()


# --- 7: the split page reads whole at any size down to the minimum ---

def _leaves(page):
    from PySide6.QtWidgets import QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLabel, QLineEdit

    from phoenix_gui.ui.membar import MemoryBar

    kinds = (QLabel, QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox, QLineEdit, MemoryBar)
    return [w for w in page.findChildren(QWidget_()) if isinstance(w, kinds) and w.isVisibleTo(page)
            and not isinstance(w.parentWidget(), (QAbstractSpinBox, QComboBox))]


def QWidget_():  # noqa: N802
    from PySide6.QtWidgets import QWidget

    return QWidget


def _overlaps(page):
    """Pairs of visible controls and texts that are drawn over each other, and texts cut short."""
    from PySide6.QtCore import QRect
    from PySide6.QtWidgets import QLabel

    content = page.scroll.widget() if hasattr(page.scroll, "widget") else page
    rects = [(w, QRect(w.mapTo(content, w.rect().topLeft()), w.size())) for w in _leaves(page)]
    bad = []
    for k, (a, ra) in enumerate(rects):
        for b, rb in rects[k + 1:]:
            if ra.intersects(rb) and not (a.isAncestorOf(b) or b.isAncestorOf(a)):
                bad.append(f"{a.__class__.__name__} {getattr(a, 'text', lambda: '')()[:30]!r} over "
                           f"{b.__class__.__name__} {getattr(b, 'text', lambda: '')()[:30]!r}")
        if isinstance(a, QLabel) and a.text():
            need = a.heightForWidth(a.width()) if a.wordWrap() else a.sizeHint().height()
            if a.height() < need or (not a.wordWrap() and a.width() < a.sizeHint().width()):
                bad.append(f"cut: {a.text()[:40]!r} {a.size().toTuple()} needs {need}")
    return bad


@pytest.mark.parametrize("size", [(1280, 860), (1024, 700), (800, 600), (640, 480), (400, 300)])
@pytest.mark.parametrize("plan", ["short cards", "auto-fit"])
def test_the_split_page_has_no_overlap_and_no_cut_text(wiz, qtbot, size, plan):
    from phoenix_gui.ui.wizard import MIN_SIZE

    st = wiz.state
    if plan == "short cards":
        st.set_gpulayers(None)
        st.set_split_text("4 8 6")
    else:
        st.run_auto_fit("fastest")
    wiz.go_to("split")
    wiz.resize(*size)
    qtbot.wait(50)
    assert (wiz.width(), wiz.height()) == (max(size[0], MIN_SIZE[0]), max(size[1], MIN_SIZE[1]))
    page = wiz.page("split")
    assert _overlaps(page) == []
    # each card's state and advice once, next to its bar
    texts = [w.text() for w in _leaves(page) if hasattr(w, "text")]
    bad = [bar.device for _, bar, _ in page.bar_rows if bar.device.state != "fits"]
    for (head, bar, why) in page.bar_rows:
        d = bar.device
        if d.state != "fits":
            assert d.advice() in why.text() and d.name in head.text()
            assert sum(d.advice() in t for t in texts) == sum(x.advice() == d.advice() for x in bad), d.name
            assert sum(f"{d.short_bytes / (1 << 20):,.0f} MiB" in t for t in texts) == 1, d.name


def test_the_minimum_window_size_is_set_and_kept(wiz, qtbot):
    from phoenix_gui.ui.wizard import MIN_SIZE

    assert (wiz.minimumWidth(), wiz.minimumHeight()) == MIN_SIZE
    wiz.resize(300, 200)
    assert (wiz.width(), wiz.height()) == MIN_SIZE


# --- 14: wording ---

def test_an_unticked_card_is_not_explained_as_left_out_for_speed(wiz):
    st = wiz.state
    st.set_included(st.devices[0], False)
    st.run_auto_fit("fastest")
    wiz.go_to("split")
    assert "runs faster without it" not in wiz.page("split").explain.text()


def test_layers_on_another_pcs_cpu_are_not_called_gpu_layers(qtbot, tmp_path):
    from cluster_rigs import MAIN_AND_TWO_NODES

    from phoenix_gui.model import preset_model_info
    from phoenix_gui.ui.pages.split import OFFLOADED

    rig = tmp_path / "cluster.toml"
    rig.write_text(MAIN_AND_TWO_NODES)
    w = make_wizard(rig_path=str(rig), persist=False, measure=False)
    qtbot.addWidget(w)
    w.show()
    w.state.set_model(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), None)
    for i in range(len(w.state.rig.gpus)):
        w.state.set_included(i, True)
    w.go_to("split")
    assert w.page("split").layers_label.text() == OFFLOADED


def test_the_hardware_title_tells_two_pcs_of_the_same_name_apart(wiz, monkeypatch):
    st = wiz.state
    st.set_rig(dataclasses.replace(st.rig, name="vm"))
    st.add_node(a_node(st.rig, address="192.168.1.20:50052", name="vm"))
    wiz.go_to("hardware")
    title = wiz.page("hardware").heading.text()
    assert "(vm + vm)" not in title and "192.168.1.20:50052" in title


# --- 18: tab order and error colour ---

def test_tab_walks_the_card_rows_before_gpu_layers_and_autofit(wiz, qtbot):
    wiz.go_to("split")
    page = wiz.page("split")
    rows = list(page.rows.values())
    rows[0].slider.setFocus()
    seen = []
    for _ in range(4 * len(rows) + 6):
        seen.append(QApplication_().focusWidget())
        qtbot.keyClick(QApplication_().focusWidget(), Qt.Key_Tab)
    order = [w for w in seen if w in {page.layers, page.autofit} or any(w in (r.slider, r.lock) for r in rows)]
    assert order.index(rows[-1].lock) < order.index(page.layers) < order.index(page.autofit)


def QApplication_():  # noqa: N802
    from PySide6.QtWidgets import QApplication

    return QApplication


def test_model_page_errors_are_red_text(wiz, qtbot, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 16)
    wiz.go_to("model")
    page = wiz.page("model")
    page.load(str(bad))
    qtbot.waitUntil(lambda: page.error.isVisible(), timeout=10000)
    img = page.error.grab().toImage()
    reds = sum(1 for x in range(12, img.width()) for y in range(img.height())
               if (c := img.pixelColor(x, y)).red() > c.green() + 80 and c.red() > c.blue() + 80)
    assert reds > 30  # the sentence itself is red, not only the border on its left


# --- 10: a calibration on another rig is simply not used ---

def test_a_calibration_for_other_cards_says_nothing_on_another_rig(qtbot, skeletons):
    from phoenix_gui.backends import calibrations
    from phoenix_gui.hardware.calibration import Calibration

    rig = load_rig(demo_rig_path())
    calibrations.save(Calibration(gpu_scale={g.uuid: 2.0 for g in rig.gpus}, cpu_scale=2.0, runs=4, created=0.0,
                                  key=calibrations.rig_key(rig, "koboldcpp", "1.115.1")))
    w = make_wizard(rig_path=str(demo_rig_path()), model_path=str(skeletons("qwen2.5-7b-instruct-q4_k_m")),
                    persist=False, measure=False)
    qtbot.addWidget(w)
    page = w.page("split")
    w.state.add_node(a_node(w.state.rig))  # another PC: these are not the cards the calibration measured
    assert page.calibrated.text() == "" and "no longer applies" not in page.calibrated.text()


# --- 8: a new model opens on the fastest plan that fits; the user's own split always wins ---

def test_a_new_model_opens_on_the_fastest_plan_and_says_so(wiz):
    from phoenix_gui.session import OPENED_ON_FASTEST

    wiz.go_to("split")
    page = wiz.page("split")
    assert wiz.state.plan().fits and page.speed.text() != "does not fit"
    assert OPENED_ON_FASTEST in page.explain.text()
    assert "do not fit" not in page.verdict.text()


def test_the_users_split_wins_over_the_fastest_plan(wiz, tmp_path):
    from phoenix_gui.model import preset_model_info

    k = tmp_path / "mine.kcpps"
    k.write_text(json.dumps({"gpulayers": 40, "tensor_split": [1.5, 4.5, 3], "contextsize": 4096,
                             "usecuda": ["normal"]}))
    st = wiz.state
    wiz.go_to("model")
    wiz.page("model").import_kcpps(str(k))  # imported: kept
    assert st.gpulayers == 40 and [round(st.percent(i), 1) for i in st.devices] == [16.7, 50.0, 33.3]
    st.set_split_text("4 8 6")  # typed: a model loaded afterwards keeps it
    st.set_model(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), None)
    assert [st.shares[i] for i in st.devices] == [4.0, 8.0, 6.0]


# --- 15: the monitor on a PC without GPUs ---

def test_monitor_without_gpus_hides_gpu_graphs_and_keeps_speeds_non_negative(qtbot, tmp_path):
    from test_monitor_page import cpu_rig

    from phoenix_gui.backends.processes.ports import free_port as port
    from phoenix_gui.model import write_skeleton

    model = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf", random_data=True)
    w = make_wizard(rig_path=cpu_rig(tmp_path), model_path=str(model), persist=False, measure=False)
    qtbot.addWidget(w)
    w.resize(1024, 700)
    w.show()
    st = w.state
    st.set_executable(str(Path(__file__).with_name("fake_koboldcpp.py")))
    st.set_port(port())
    assert w.session.start() is None
    qtbot.waitUntil(lambda: w.session.outcome is not None and w.session.outcome.ok, timeout=60000)
    mon = w.page("monitor")
    qtbot.wait(1500)  # a few samples
    mon.update_plots()
    items = [mon.plots.ci.getItem(r, 0) for r in range(3)]
    assert mon.vram not in items and mon.util not in items and mon.tps in items  # nothing to measure: not shown
    lo, hi = mon.tps.viewRange()[1]
    assert lo == 0 and 0 < hi < 1e4
    w.session.stop()


# --- 12: the status follows the server ---

def test_stop_says_stopping_at_once_and_the_launch_page_follows(qtbot, tmp_path, monkeypatch):
    from test_monitor_page import cpu_rig

    from phoenix_gui.backends.processes.ports import free_port as port
    from phoenix_gui.model import write_skeleton

    model = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf", random_data=True)
    w = make_wizard(rig_path=cpu_rig(tmp_path), model_path=str(model), persist=False, measure=False)
    qtbot.addWidget(w)
    w.show()
    st = w.state
    st.set_executable(str(Path(__file__).with_name("fake_koboldcpp.py")))
    st.set_port(port())
    w.go_to("launch")
    launch = w.page("launch")
    qtbot.mouseClick(launch.launch, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.session.outcome is not None and w.session.outcome.ok, timeout=60000)
    mon = w.page("monitor")
    seen = []
    real = w.session.stop
    monkeypatch.setattr(w.session, "stop", lambda: (seen.append((mon.status.text(), mon.stop_btn.isEnabled(),
                                                                 mon.bench_btn.isEnabled())), real())[1])
    qtbot.mouseClick(mon.stop_btn, Qt.LeftButton)
    assert seen == [("Stopping…", False, False)]  # said and greyed before the seconds a stop may take
    qtbot.waitUntil(lambda: not w.session.running, timeout=15000)
    assert "Starting" not in launch.status.text() and "stopped" in launch.status.text()
    assert not mon.stop_btn.isEnabled()


# --- 9: after the tune ---

def test_after_the_tune_cancel_is_off_and_use_the_winner_closes_the_dialog(qtbot, skeletons, monkeypatch):
    from test_tune_panel import wizard

    w, st, page = wizard(qtbot, skeletons, monkeypatch)
    qtbot.mouseClick(page.tune, Qt.LeftButton)
    panel = page.tune_panel
    qtbot.waitUntil(lambda: panel.tuner is not None and panel.tuner.state != "running", timeout=120000)
    assert panel.tuner.state == "done" and not panel.cancel_btn.isEnabled()
    assert panel.table.rowCount() == len(panel.tuner.runs)
    qtbot.mouseClick(panel.use_btn, Qt.LeftButton)
    assert not panel.isVisible()
