""""Share this PC's GPUs" in the wizard: the real koboldcpp RPC host started and stopped from the panel's
buttons (127.0.0.1 only), the address another PC types, the network-address warning and allow-list, and
nothing left running when the wizard closes."""

import os
import socket

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import psutil  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from machine_helpers import gone  # noqa: E402
from phoenix_gui.backends.nodes import INFO_PORT_OFFSET  # noqa: E402
from phoenix_gui.backends.processes.ports import free_port_with  # noqa: E402
from phoenix_gui.ui.share_panel import LOOPBACK, NO_AUTH, STOP  # noqa: E402


@pytest.fixture
def panel(qtbot, wiz, kcpp_tree):
    p = wiz.page("hardware").show_share()
    p.exe.setText(str(kcpp_tree / "koboldcpp.py"))
    p.port.setValue(free_port_with([INFO_PORT_OFFSET]))
    return p


def start(qtbot, p):
    qtbot.mouseClick(p.button, Qt.LeftButton)
    qtbot.waitUntil(lambda: p.host is not None or not p.sharing, timeout=90000)
    assert p.host is not None, p.error.text()
    return p.host


def engine_pids(host):
    return [host._proc.pid] + [c.pid for c in psutil.Process(host._proc.pid).children(recursive=True)]


def test_share_on_loopback_shows_the_address_and_stop_leaves_nothing(qtbot, wiz, panel):
    assert panel._chosen_host() == LOOPBACK and not panel.warning.isVisibleTo(panel)
    host = start(qtbot, panel)
    port = panel.port.value()
    assert host.address == f"127.0.0.1:{port}"
    assert f"Add a PC: 127.0.0.1:{port}" in panel.status.text()
    assert panel.button.text() == STOP and not panel.port.isEnabled()
    assert wiz.page("hardware").share_button.text() == f"Sharing on 127.0.0.1:{port}…"
    pids = engine_pids(host)
    # the main PC's side: Add a PC with that address describes this very host
    nodes = wiz.page("hardware").nodes
    nodes.address.setText(host.address)
    qtbot.mouseClick(nodes.add, Qt.LeftButton)
    qtbot.waitUntil(lambda: not nodes._task.running, timeout=30000)
    assert wiz.state.rig.gpus[0].node == host.address, nodes.error.text()
    qtbot.mouseClick(panel.button, Qt.LeftButton)  # Stop
    qtbot.waitUntil(lambda: not panel.sharing, timeout=20000)
    assert gone(pids) and panel.status.text() == "Not sharing." and panel.port.isEnabled()
    assert wiz.page("hardware").share_button.text() == "Share this PC's GPUs…"


def test_closing_the_wizard_stops_the_sharing(qtbot, wiz, panel):
    host = start(qtbot, panel)
    pids = engine_pids(host)
    panel.close()  # the panel's window only: sharing goes on
    assert panel.sharing and psutil.pid_exists(pids[0])
    wiz.close()
    assert gone(pids) and not panel.sharing


def test_a_network_address_warns_and_takes_an_allow_list(qtbot, panel):
    panel.listen.addItem("192.0.2.7 — eth9 (other PCs on this network)", "192.0.2.7")  # a documentation address
    panel.listen.setCurrentIndex(panel.listen.count() - 1)
    assert panel.warning.isVisibleTo(panel) and panel.warning.text() == NO_AUTH
    assert panel.allow.isEnabled()
    panel.allow.setText("192.168.1.10, not-an-ip")
    qtbot.mouseClick(panel.button, Qt.LeftButton)
    assert "not-an-ip" in panel.error.text() and "allow-list" in panel.error.text()
    assert not panel.sharing  # refused before anything started
    panel.listen.setCurrentIndex(0)
    assert not panel.warning.isVisibleTo(panel) and not panel.allow.isEnabled()


def test_a_taken_port_is_one_sentence_and_nothing_keeps_running(qtbot, panel):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    panel.port.setValue(s.getsockname()[1])
    try:
        qtbot.mouseClick(panel.button, Qt.LeftButton)
        qtbot.waitUntil(lambda: not panel.sharing, timeout=60000)
    finally:
        s.close()
    assert panel.error.isVisible() and str(panel.port.value()) in panel.error.text()
    assert panel.button.isEnabled() and panel.host is None


def test_no_engine_is_one_sentence(qtbot, panel):
    panel.exe.setText("")
    qtbot.mouseClick(panel.button, Qt.LeftButton)
    assert "koboldcpp" in panel.error.text() and not panel.sharing


def test_bad_devices_are_one_sentence_and_nothing_starts(qtbot, panel):
    panel.devices.setText("0; rm -rf /")
    qtbot.mouseClick(panel.button, Qt.LeftButton)
    assert panel.error.isVisible() and "device" in panel.error.text() and not panel.sharing
    assert panel.devices.isEnabled()
