"""A horizontal slider with labels that sit exactly over their values (the handle under "32k" reads 32,768).

Label positions come from the style's own value-to-pixel mapping, so they stay right at any width
and in any style. Labels that would overlap a neighbour are left out; clicking a label sets its value.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QSlider, QStyle, QStyleOptionSlider, QVBoxLayout, QWidget


def handle_centre_x(slider: QSlider, value: int) -> float:
    """Where the centre of the handle is, in the slider's coordinates, when it shows `value`."""
    opt = QStyleOptionSlider()
    slider.initStyleOption(opt)
    style = slider.style()
    groove = style.subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderGroove, slider)
    handle = style.subControlRect(QStyle.CC_Slider, opt, QStyle.SC_SliderHandle, slider)
    span = groove.width() - handle.width()
    pos = QStyle.sliderPositionFromValue(slider.minimum(), slider.maximum(), value, span, opt.upsideDown)
    return groove.x() + pos + handle.width() / 2.0


class TickedSlider(QWidget):
    picked = Signal(int)  # a label was clicked: its slider value

    def __init__(self, parent=None):
        super().__init__(parent)
        self.slider = QSlider(Qt.Horizontal)
        self.labels = QWidget()
        self.labels.setMinimumHeight(22)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        inset = QHBoxLayout()  # room at both ends for half a label over the first and last values
        inset.setContentsMargins(18, 0, 18, 0)
        inset.addWidget(self.slider)
        lay.addLayout(inset)
        lay.addWidget(self.labels)
        self._ticks: list[tuple[int, QPushButton]] = []

    def set_ticks(self, ticks: list[tuple[int, str, str]]) -> None:
        """(slider value, label, tooltip) for each stop."""
        for _, b in self._ticks:
            b.deleteLater()
        self._ticks = []
        for value, text, tip in ticks:
            b = QPushButton(text, self.labels)
            b.setFlat(True)
            b.setToolTip(tip)
            b.setFocusPolicy(Qt.NoFocus)  # the slider itself is the keyboard control
            b.setStyleSheet("QPushButton { padding: 0px 2px; }")
            b.clicked.connect(lambda _=False, v=value: self.picked.emit(v))
            self._ticks.append((value, b))
        self._place()

    def tick_centre_x(self, value: int) -> float | None:
        """Centre of the label for `value`, in the slider's coordinates (None: not shown)."""
        for v, b in self._ticks:
            if v == value and b.isVisible():
                return b.x() + b.width() / 2.0 + self.labels.x() - self.slider.x()
        return None

    def resizeEvent(self, e) -> None:  # noqa: N802
        super().resizeEvent(e)
        self._place()

    def showEvent(self, e) -> None:  # noqa: N802
        super().showEvent(e)
        self._place()

    def _place(self) -> None:
        right_edge = -1e9
        for value, b in self._ticks:
            w = b.sizeHint().width()
            x = handle_centre_x(self.slider, value) + self.slider.x() - self.labels.x()
            left = round(x - w / 2.0)
            if left < right_edge + 4 or left < 0 or left + w > self.labels.width():
                b.hide()
                continue
            b.setGeometry(left, 0, w, self.labels.height())
            b.show()
            right_edge = left + w
