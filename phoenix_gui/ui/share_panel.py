""""Share this PC's GPUs": this PC becomes a node another PC adds (llama.cpp's RPC host, run by
backends/share.py ShareHost). Loopback unless the user picks a network address; then a warning that the
RPC protocol has no authentication, and an allow-list Phoenix enforces, which sharing on a network address
requires (0.0.0.0/0 lets every computer in, said explicitly: a blank field never does).

The host runs on a thread of its own that lives exactly as long as the sharing: on Linux the kernel kills
a child when the thread that started it ends, so neither the GUI's short jobs nor a pool thread may own it.
"""

from __future__ import annotations

import threading
import time

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (QApplication, QComboBox, QDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPushButton, QSpinBox, QVBoxLayout)

from .. import validate as v
from .nodes_panel import banner

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 50052
NO_AUTH = ("llama.cpp's RPC protocol has no password and no encryption: any computer that can reach this "
           "address can use this PC's devices and memory. List the main PC's address under “Allow only” so "
           "that Phoenix lets no other PC connect. Other accounts on this PC are not checked: the engine "
           "listens on 127.0.0.1, where any local user can reach it, so share only from a PC whose users you "
           "trust.")
NEEDS_ALLOW = ("Sharing on a network address needs the main PC's address under “Allow only”, such as "
               "192.168.1.10 (0.0.0.0/0 lets every computer that can reach this PC connect).")
START, STOP = "Start sharing", "Stop sharing"


def lan_addresses() -> list[tuple[str, str]]:
    """(IPv4 address, interface) of this PC's network interfaces, loopback left out."""
    import socket

    import psutil

    out = []
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                out.append((a.address, name))
    return out


def koboldcpp_exe(state) -> str:
    """The koboldcpp the wizard launches with, else the one Phoenix finds: the node's engine must speak the
    main PC's RPC protocol version, so the same build on both is the safe default."""
    from ..engines import engine_named

    if engine_named(state.backend).rpc_host and state.executable:  # the wizard's engine shares as it is
        return state.executable
    return engine_named("koboldcpp").find() or ""


class _Relay(QObject):
    started = Signal(object)  # the running ShareHost
    failed = Signal(str)  # one sentence
    ended = Signal(str)  # "" when stopped on request, else why it stopped


class _Keeper(threading.Thread):
    """Starts the host, watches it, and stops it on request, all on this one thread."""

    def __init__(self, make_host, relay: _Relay):
        super().__init__(name="phoenix-share", daemon=True)
        self.make_host, self.relay = make_host, relay
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            host = self.make_host()
            host.start()
        except Exception as e:  # noqa: BLE001 - one sentence for the panel
            self.relay.failed.emit(_sentence(e))
            return
        if self.stop_event.is_set():  # stopped while it was starting
            host.stop()
            self.relay.ended.emit("")
            return
        self.relay.started.emit(host)
        why = ""
        while not self.stop_event.wait(0.5):
            code = host.poll()
            if code is not None:
                why = f"The sharing engine stopped by itself (exit code {code}); nothing is shared now."
                break
        host.stop()
        self.relay.ended.emit(why)


def _sentence(e: BaseException) -> str:
    if isinstance(e, v.InputError):
        return str(e)
    what = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    return f"Sharing could not start ({what})."


class SharePanel(QDialog):
    """A small window beside the wizard: sharing keeps running while it is closed, until Stop or until the
    wizard closes."""

    changed = Signal()  # started or stopped: the hardware page's button follows

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Share this PC's GPUs")
        self.setMinimumWidth(620)
        self.state = state
        self.host = None  # the running ShareHost
        self._keeper: _Keeper | None = None
        self._relay = _Relay()
        self._relay.started.connect(self._started)
        self._relay.failed.connect(self._failed)
        self._relay.ended.connect(self._ended)
        intro = QLabel("Another PC running Phoenix can use this PC's devices: start sharing here, then on that PC "
                       "type the address shown below under Hardware → Add a PC.")
        intro.setWordWrap(True)
        self.exe = QLineEdit(koboldcpp_exe(state))
        self.exe.setToolTip("The koboldcpp that shares the devices (--rpcmode host); use the same version as on "
                            "the main PC: the RPC protocol is version-checked.")
        self.listen = QComboBox()
        self.listen.addItem(f"{LOOPBACK} — this PC only (no other PC can connect)", LOOPBACK)
        for ip, name in lan_addresses():
            self.listen.addItem(f"{ip} — {name} (other PCs on this network)", ip)
        self.listen.setAccessibleName("address to share on")
        self.listen.currentIndexChanged.connect(lambda _i: self._show_choice())
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(DEFAULT_PORT)
        self.devices = QLineEdit()
        self.devices.setPlaceholderText("all; or GPU numbers such as 0,1")
        self.devices.setAccessibleName("devices to share")
        self.devices.setToolTip("Which of this PC's GPUs to share (--rpcdevice); empty shares them all.")
        self.allow = QLineEdit()
        self.allow.setPlaceholderText("the main PC's address, e.g. 192.168.1.10 (commas between several)")
        self.allow.setAccessibleName("allow only these addresses")
        self.warning = banner(NO_AUTH, kind="warn")
        form = QFormLayout()
        form.addRow("Engine:", self.exe)
        form.addRow("Share on:", self.listen)
        form.addRow("Port:", self.port)
        form.addRow("Devices:", self.devices)
        form.addRow("Allow only:", self.allow)
        self.button = QPushButton(START)
        self.button.clicked.connect(self.toggle)
        self.status = QLabel("Not sharing.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)  # the address is copied from here
        self.error = banner(kind="error")
        row = QHBoxLayout()
        row.addWidget(self.button)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addLayout(form)
        lay.addWidget(self.warning)
        lay.addLayout(row)
        lay.addWidget(self.status)
        lay.addWidget(self.error)
        self._watched = None
        self._show_choice()
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._quitting)

    # --- the wizard closing stops the sharing ---
    def watch(self, window) -> None:
        """Stop sharing when `window` (the wizard) closes or is hidden by code (not when it is minimised)."""
        if window is not None and window is not self._watched:
            window.installEventFilter(self)
            self._watched = window

    def eventFilter(self, obj, e) -> bool:  # noqa: N802
        if obj is self._watched and e.type() == QEvent.Hide and not e.spontaneous():  # closed, not minimised
            self.stop_sharing(wait=True)
        return False

    def _quitting(self) -> None:
        self.stop_sharing(wait=True)

    # --- state ---
    @property
    def sharing(self) -> bool:
        return self._keeper is not None

    def _chosen_host(self) -> str:
        return self.listen.currentData() or LOOPBACK

    def _show_choice(self) -> None:
        lan = self._chosen_host() != LOOPBACK
        self.warning.setVisible(lan)
        self.allow.setEnabled(lan and not self.sharing)

    def toggle(self) -> None:
        self.stop_sharing() if self.sharing else self.start_sharing()

    def start_sharing(self) -> str:
        """Start in the background; returns a sentence when the inputs are refused (also shown)."""
        from ..backends.share import ShareHost, allow_list

        if self.sharing:
            return ""
        host, port, exe = self._chosen_host(), self.port.value(), self.exe.text().strip()
        devices = [d.strip() for d in self.devices.text().split(",") if d.strip()] or None
        try:
            if not exe:
                raise v.InputError("No koboldcpp was found: give the path of koboldcpp (the same version as on "
                                   "the main PC) under Engine.")
            if host != LOOPBACK and not self.allow.text().strip():
                raise v.InputError(NEEDS_ALLOW)  # a blank field must not mean "everyone"
            allow = allow_list(self.allow.text()) if host != LOOPBACK else None
            ShareHost(exe, host=host, port=port, devices=devices, allow=allow)  # its checks, before any thread
            make = lambda: ShareHost(exe, host=host, port=port, devices=devices, allow=allow)  # noqa: E731
        except v.InputError as e:
            self._say(str(e))
            return str(e)
        self._say("")
        self._keeper = _Keeper(make, self._relay)
        self.button.setText("Starting…")
        self.button.setEnabled(False)
        for w in (self.exe, self.listen, self.port, self.devices, self.allow):
            w.setEnabled(False)
        self.status.setText(f"Starting the engine on {host}:{port}…")
        self._keeper.start()
        self.changed.emit()
        return ""

    def stop_sharing(self, wait: bool = False) -> None:
        k = self._keeper
        if k is None:
            return
        k.stop_event.set()
        self.button.setEnabled(False)
        self.status.setText("Stopping…")
        if wait:  # closing: the engine must be gone before Phoenix is
            k.join(timeout=15.0)
            QApplication.processEvents()

    # --- from the keeper thread (queued to this thread) ---
    def _started(self, host) -> None:
        self.host = host
        self.button.setText(STOP)
        self.button.setEnabled(True)
        devices = ", ".join(f"{d.get('engine_name')} ({d.get('description')})" for d in host.engine_devices)
        lines = [f"Sharing since {time.strftime('%H:%M')}. On the main PC, Hardware → Add a PC: {host.address}",
                 f"Devices: {devices or 'as the engine lists them'} · engine: {host.engine_name or self.exe.text()}"]
        if host.info_url:
            lines.append(f"Information for the main PC: {host.info_url}")
        if host.allow:
            lines.append("Phoenix lets only " + ", ".join(str(a) for a in host.allow) + " connect from other PCs; "
                         "accounts on this PC can reach the engine directly, so they are trusted.")
        elif host.host != LOOPBACK:
            lines.append("Any computer that can reach this address may connect (no allow-list).")
        self.status.setText("\n".join(lines))
        self.changed.emit()

    def _failed(self, sentence: str) -> None:
        self._keeper = None
        self._reset()
        self.status.setText("Not sharing.")
        self._say(sentence)

    def _ended(self, why: str) -> None:
        self._keeper, self.host = None, None
        self._reset()
        self.status.setText("Not sharing.")
        self._say(why)

    def _reset(self) -> None:
        self.button.setText(START)
        self.button.setEnabled(True)
        for w in (self.exe, self.listen, self.port, self.devices):
            w.setEnabled(True)
        self._show_choice()
        self.changed.emit()

    def _say(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))
