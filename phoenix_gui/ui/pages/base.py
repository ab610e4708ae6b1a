from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWizardPage

from ..state import WizardState


class StatePage(QWizardPage):
    """A wizard page that displays the shared WizardState and refreshes when it changes."""

    def __init__(self, state: WizardState, title: str, subtitle: str = ""):
        super().__init__()
        self.state = state
        self.setTitle(title)
        if subtitle:
            self.setSubTitle(subtitle)
        self._updating = False

    def refresh(self) -> None:  # overridden
        pass

    def initializePage(self) -> None:  # noqa: N802
        self.refresh()

    def guarded(self, fn):
        """Widgets set programmatically must not feed their change back into the state."""
        if self._updating:
            return
        fn()


class quiet:
    """Set widgets programmatically without their change signals firing (no re-entrant slots)."""

    def __init__(self, *widgets):
        self.widgets = widgets

    def __enter__(self):
        self.before = [w.blockSignals(True) for w in self.widgets]
        return self

    def __exit__(self, *exc):
        for w, b in zip(self.widgets, self.before):
            w.blockSignals(b)


def banner(text: str = "", kind: str = "info") -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextSelectableByMouse)
    colours = {"info": "#1f6feb", "warn": "#b08800", "error": "#d62728"}
    lab.setStyleSheet(f"QLabel {{ border-left: 4px solid {colours[kind]}; padding: 6px 8px; }}")
    lab.setVisible(bool(text))
    return lab


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"
