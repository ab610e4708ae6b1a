"""The Phoenix wizard window: five pages over one WizardState."""

from __future__ import annotations

import base64
import sys

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtWidgets import QAbstractSpinBox, QComboBox, QLineEdit, QMessageBox, QWizard

from ..config import UserSettings, save_settings
from .pages import ContextPage, HardwarePage, LaunchPage, ModelPage, MonitorPage, SplitPage
from .session import ServerSession
from ..session import WizardState

MIN_SIZE = (800, 600)
PAGES = ["hardware", "model", "context", "split", "launch", "monitor"]


class PhoenixWizard(QWizard):
    def __init__(self, state: WizardState, user_settings: UserSettings | None = None, persist: bool = True,
                 notice: str = "", nvml=None):
        super().__init__()
        self.state = state
        self.session = ServerSession(state, nvml=nvml)
        self.us = user_settings or UserSettings()
        self.persist = persist
        self.setWindowTitle("Phoenix — run big models on the GPUs you have")
        self.setWizardStyle(QWizard.ModernStyle)
        self.setOption(QWizard.NoCancelButton, False)
        self.setOption(QWizard.HaveHelpButton, False)
        self.setButtonText(QWizard.FinishButton, "Close")
        # the smallest window every page lays out whole in (the split page scrolls rather than overlap)
        self.setMinimumSize(*MIN_SIZE)
        self.setAcceptDrops(True)
        self.pages = {
            "hardware": HardwarePage(state),
            "model": ModelPage(state, self.us),
            "context": ContextPage(state),
            "split": SplitPage(state),
            "launch": LaunchPage(state, self.session),
            "monitor": MonitorPage(state, self.session),
        }
        for key in PAGES:
            self.addPage(self.pages[key])
        if notice:
            self.pages["hardware"].show_notice(notice)
        self.currentIdChanged.connect(lambda _id: self._on_change())
        self.session.ready.connect(lambda _o: self.go_to("monitor"))
        if self.us.geometry:
            try:
                self.restoreGeometry(QByteArray(base64.b64decode(self.us.geometry)))
            except (ValueError, TypeError):
                pass

    def page(self, key: str):
        return self.pages[key]

    def go_to(self, key: str) -> None:
        """Move forward or back to a page (as Next/Back would)."""
        target = PAGES.index(key)
        while PAGES.index(self._current_key()) != target:
            before = self._current_key()
            self.next() if PAGES.index(before) < target else self.back()
            if self._current_key() == before:  # a page that is not complete (or a hidden window) stops here
                break

    def _current_key(self) -> str:
        page = self.currentPage()
        for k, p in self.pages.items():
            if p is page:
                return k
        return "hardware"

    def _on_change(self) -> None:
        page = self.currentPage()
        if page is not None:
            page.refresh()

    # Enter in a field commits that field only; it never presses Next (a typed model path is read
    # first, a typed percent or context is applied where it is).
    def keyPressEvent(self, e) -> None:  # noqa: N802
        if e.key() in (Qt.Key_Return, Qt.Key_Enter) and isinstance(
                self.focusWidget(), (QLineEdit, QAbstractSpinBox, QComboBox)):
            e.accept()
            return
        super().keyPressEvent(e)

    def confirm_quit(self) -> bool:
        """While a server runs or this PC shares its GPUs, closing asks first (closing stops both)."""
        share = getattr(self.pages.get("hardware"), "share", None)
        sharing = share is not None and share.sharing
        if not self.session.running and not sharing:
            return True
        what = " and ".join(w for w, on in (("a server is running", self.session.running),
                                             ("this PC shares its GPUs", sharing)) if on)
        answer = QMessageBox.question(self, "Stop and close?", f"{what[0].upper()}{what[1:]}. Closing Phoenix "
                                      f"stops {'both' if ' and ' in what else 'it'}. Close anyway?",
                                      QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    def reject(self) -> None:  # Escape and the window's Cancel
        if self.confirm_quit():
            super().reject()

    def accept(self) -> None:  # the last page's Close
        if self.confirm_quit():
            super().accept()

    # drag and drop a model or a .kcpps onto the window
    def dragEnterEvent(self, e) -> None:  # noqa: N802
        if e.mimeData().hasUrls() and any(u.toLocalFile().lower().endswith((".gguf", ".kcpps", ".kcppt"))
                                          for u in e.mimeData().urls()):
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:  # noqa: N802
        for u in e.mimeData().urls():
            path = u.toLocalFile()
            if path.lower().endswith(".gguf"):
                self.go_to("model")
                self.pages["model"].load(path)
                break
            if path.lower().endswith((".kcpps", ".kcppt")):
                self.go_to("model")
                self.pages["model"].import_kcpps(path)
                break

    def save(self) -> None:
        if not self.persist:
            return
        self.state.to_user_settings(self.us)
        self.us.rig_path = None  # a simulated rig is never remembered as this PC
        self.us.geometry = base64.b64encode(bytes(self.saveGeometry())).decode("ascii")
        try:
            save_settings(self.us)
        except OSError as e:  # one sentence (read-only folder, disk full); never blocks closing
            print(f"phoenix: {e}", file=sys.stderr)

    def done(self, result: int) -> None:
        self.save()
        self._stop_sharing()
        self.session.stop()  # nothing keeps running after Phoenix closes
        super().done(result)

    def _stop_sharing(self) -> None:
        """A share this PC started ends with the wizard (its panel also watches the window; this does not
        depend on the panel having been shown)."""
        share = getattr(self.pages.get("hardware"), "share", None)
        if share is not None:
            share.stop_sharing(wait=True)

    def closeEvent(self, e) -> None:  # noqa: N802
        # The window's close button asks while a server runs; a close from code (app shutdown,
        # tests) does not wait on a question. Either way nothing keeps running afterwards.
        if e.spontaneous() and self.isVisible() and not self.confirm_quit():
            e.ignore()
            return
        self.save()
        self._stop_sharing()
        self.session.stop()
        e.accept()
