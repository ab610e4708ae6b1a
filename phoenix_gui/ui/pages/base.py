from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QWizardPage

from ...session import ALL_TOPICS, RIG, WizardState


class StatePage(QWizardPage):
    """A wizard page over the shared WizardState. It follows the state's `topics` and redraws only
    while it is shown; a page that was hidden when its topics changed redraws when it is shown again.
    Every page's subtitle says when the rig is simulated, so a plan for another PC is never mistaken
    for this one."""

    topics = ALL_TOPICS

    def __init__(self, state: WizardState, title: str, subtitle: str = ""):
        super().__init__()
        self.state = state
        self.setTitle(title)
        self._subtitle = subtitle
        self._updating = False
        self._dirty = True
        state.on(set(self.topics) | {RIG}, self._state_changed)
        self._show_subtitle()

    def _show_subtitle(self) -> None:
        rig = self.state.rig
        sim = f"Simulated rig “{rig.name}”: planning for another PC, not this one. " if rig.simulated else ""
        if sim or self._subtitle:
            self.setSubTitle(sim + self._subtitle)

    def _state_changed(self, topics) -> None:
        if RIG in topics:
            self._show_subtitle()
        if self.isVisible():
            self.refresh()
        else:
            self._dirty = True

    def showEvent(self, e) -> None:  # noqa: N802
        if self._dirty:
            self._dirty = False
            self.refresh()
        super().showEvent(e)

    def refresh(self) -> None:  # overridden
        pass

    def initializePage(self) -> None:  # noqa: N802
        self.refresh()


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
    ink = f" color: {colours[kind]};" if kind == "error" else ""  # an error reads as one, not as plain black text
    lab.setStyleSheet(f"QLabel {{ border-left: 4px solid {colours[kind]}; padding: 6px 8px;{ink} }}")
    lab.setVisible(bool(text))
    return lab


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"
