"""Bind a widget to one value of the WizardState, both ways (glue's callback properties, in small).

The widget shows `read()` whenever one of `topics` changes (its own signals blocked, so a shown value
never feeds back), and a user edit calls `write(value)`. A write the state refuses (SettingError) puts
the old value back and reports the sentence through `on_error`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from shiboken6 import isValid
from PySide6.QtWidgets import QAbstractSlider, QAbstractSpinBox, QCheckBox, QComboBox, QLineEdit

from ..session import SettingError, WizardState


class Binding:
    def __init__(self, widget, state: WizardState, topics: Iterable[str] | str, read: Callable[[], Any],
                 write: Callable[[Any], None] | None = None, on_error: Callable[[str], None] | None = None):
        self.widget, self.state, self.read, self.write, self.on_error = widget, state, read, write, on_error
        state.on(topics, self._shown)
        if write is not None:
            self._connect()
        self.show()

    def _connect(self) -> None:
        w = self.widget
        if isinstance(w, QAbstractSpinBox):
            w.setKeyboardTracking(False)  # a half-typed "16." is not a value: commit on Enter or leaving
            w.valueChanged.connect(self._edited)
        elif isinstance(w, QAbstractSlider):
            w.valueChanged.connect(self._edited)
        elif isinstance(w, QComboBox):
            w.currentIndexChanged.connect(lambda i: self._edited(w.itemData(i)))
        elif isinstance(w, QCheckBox):
            w.toggled.connect(self._edited)
        elif isinstance(w, QLineEdit):
            w.editingFinished.connect(lambda: self._edited(w.text()))
        else:
            raise TypeError(f"cannot bind {type(w).__name__}")

    def drop(self) -> None:
        """Stop following the state: a page calls this before it deletes the widget (Qt's `destroyed` arrives
        only after the event loop has run, and by then a change may have called show() on a dead widget)."""
        self.state.off(self._shown)

    def _edited(self, value) -> None:
        try:
            self.write(value)
        except SettingError as e:
            self.show(force=True)
            if self.on_error:
                self.on_error(str(e))
            return
        self.show()  # what the state kept: a move it could not make puts the handle back

    def _shown(self, _topics=None) -> None:
        self.show()

    def show(self, force: bool = False) -> None:
        if not isValid(self.widget):  # deleted without drop(): never touch it, and stop following
            self.drop()
            return
        w, v = self.widget, self.read()
        was = w.blockSignals(True)
        try:
            if isinstance(w, (QAbstractSpinBox, QAbstractSlider)):
                if w.value() != v:
                    w.setValue(v)
            elif isinstance(w, QComboBox):
                i = w.findData(v)
                if i >= 0 and i != w.currentIndex():
                    w.setCurrentIndex(i)
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(v))
            elif isinstance(w, QLineEdit):
                if w.text() != (v or "") and (force or not w.hasFocus()):  # never under the user's typing
                    w.setText(v or "")
        finally:
            w.blockSignals(was)


def bind(widget, state: WizardState, topics, read, write=None, on_error=None) -> Binding:
    return Binding(widget, state, topics, read, write, on_error)
