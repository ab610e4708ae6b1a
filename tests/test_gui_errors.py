"""The wizard under bad input and faults: an exception in any Qt slot or worker thread shows one sentence
and leaves the wizard usable (make_app's last-resort handler); hostile .kcpps imports and typed values
are refused with a sentence before they touch the state."""

import json
import sys
import threading

import pytest
from PySide6.QtWidgets import QPushButton

from phoenix_gui.ui import app as app_module
from phoenix_gui.ui.app import make_app, make_wizard


@pytest.fixture
def handler(qapp, monkeypatch):
    """make_app's handler, installed fresh for one test and removed afterwards."""
    monkeypatch.setattr(app_module, "_handler", None)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    make_app()
    assert sys.excepthook is not sys.__excepthook__
    return sys.excepthook


def _title(w) -> str:
    return w.currentPage().title()


@pytest.mark.qt_no_exception_capture
def test_an_exception_in_a_slot_is_one_sentence_and_the_wizard_lives_on(qtbot, handler, wiz, data_dir):
    wiz.go_to("context")
    button = QPushButton("boom", wiz.currentPage())

    def broken():
        raise RuntimeError("Signal source has been deleted")

    button.clicked.connect(broken)
    button.click()  # PySide6 hands the exception to sys.excepthook and returns
    banner = wiz.page("context").error
    qtbot.waitUntil(lambda: banner.isVisible(), timeout=5000)
    text = banner.text()
    assert "RuntimeError" in text and "still usable" in text and "\n" not in text
    log = data_dir / "errors.log"
    assert log.exists() and "Traceback" in log.read_text() and "broken" in log.read_text()
    wiz.go_to("split")  # still usable
    assert _title(wiz) == "Split" and wiz.state.plan() is not None


@pytest.mark.qt_no_exception_capture
def test_an_exception_in_a_thread_reaches_the_page(qtbot, handler, wiz):
    wiz.go_to("split")

    def worker():
        raise ValueError("worker broke")

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    banner = wiz.page("split").error
    qtbot.waitUntil(lambda: "worker broke" in banner.text(), timeout=5000)
    assert banner.isVisible()


@pytest.mark.qt_no_exception_capture
def test_an_input_error_is_shown_as_its_own_sentence(qtbot, handler, wiz):
    from phoenix_gui.validate import InputError

    wiz.go_to("context")
    b = QPushButton("x", wiz.currentPage())
    b.clicked.connect(lambda: (_ for _ in ()).throw(InputError("The port must be between 1 and 65535, not 0.")))
    b.click()
    qtbot.waitUntil(lambda: wiz.page("context").error.isVisible(), timeout=5000)
    assert wiz.page("context").error.text() == "The port must be between 1 and 65535, not 0."


def test_handler_installed_once(handler):
    make_app()
    assert sys.excepthook is handler


@pytest.mark.parametrize("cfg,words", [
    ({"tensor_split": [float("nan"), 1, 1]}, "finite"), ({"tensor_split": [float("inf"), 1]}, "finite"),
    ({"gpulayers": 2 ** 31}, "gpulayers"), ({"gpulayers": 2 ** 63}, "gpulayers"), ({"quantkv": "banana"}, "quantkv"),
    ({"contextsize": 10}, "contextsize"), ({"port_param": 70000}, "port"), ({"host": "127.0.0.1\r\ncalc.exe"}, "host"),
    ({"usecuda": ["9"]}, "usecuda"), ({"batchsize": 3}, "batchsize"),
])
def test_hostile_kcpps_import_is_refused_and_next_still_works(wiz, tmp_path, cfg, words):
    before = wiz.state.settings()
    k = tmp_path / "bad.kcpps"
    k.write_text(json.dumps(dict({"contextsize": 4096, "usecuda": ["normal"]}, **cfg)))
    wiz.go_to("model")
    page = wiz.page("model")
    page.import_kcpps(str(k))
    assert page.error.isVisible() and words in page.error.text() and "\n" not in page.error.text()
    assert wiz.state.settings() == before
    for key, title in (("context", "Context & cache"), ("split", "Split"), ("launch", "Launch")):
        wiz.go_to(key)
        assert wiz.state.plan() is not None
    assert _title(wiz) == "Launch"


def test_hostile_typed_values_on_the_launch_page(wiz, qtbot):
    wiz.go_to("launch")
    page = wiz.page("launch")
    for text in ("127.0.0.1\r\ncalc.exe", "a b", "$(reboot)", "300.1.1.1"):
        page.host.setText(text)
        page.host.editingFinished.emit()
        assert wiz.state.host == "127.0.0.1" and page.host.text() == "127.0.0.1"
    page.port.setValue(70000)  # the spin box clamps; the state never sees it
    assert 1 <= wiz.state.port <= 65535


def test_a_damaged_settings_notice_survives_page_refreshes(qtbot, config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / "settings.json").write_text(json.dumps({"gpulayers": "all", "cache_type": "banana", "port": 5010}))
    w = make_wizard(demo=False, rig_path=None, measure=False)
    qtbot.addWidget(w)
    w.show()
    page = w.page("hardware")
    page.refresh()
    page.refresh()
    assert page.banner.isVisible() and "(cache_type, gpulayers)" in page.banner.text()
    assert w.state.port == 5010 and w.state.cache_type == "f16"
    w.close()


@pytest.mark.qt_no_exception_capture
def test_more_split_values_than_gpus_is_refused_not_dropped(qtbot, handler, wiz, tmp_path):
    """WizardState.apply refuses a split longer than the chosen GPUs; from a click it reaches the page."""
    k = tmp_path / "four.kcpps"
    k.write_text(json.dumps({"contextsize": 4096, "usecuda": ["normal"], "tensor_split": [1, 2, 3, 4]}))
    wiz.go_to("model")
    before = wiz.state.settings()
    page = wiz.page("model")
    b = QPushButton("import", page)
    b.clicked.connect(lambda: page.import_kcpps(str(k)))
    b.click()
    qtbot.waitUntil(lambda: page.error.isVisible(), timeout=5000)
    assert "4 split values for 3 GPU(s)" in page.error.text() and wiz.state.settings() == before
    wiz.go_to("split")
    assert _title(wiz) == "Split"
