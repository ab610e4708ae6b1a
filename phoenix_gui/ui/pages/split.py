"""Page 4: per-GPU split sliders with locks, GPU layers, live per-device memory bars, auto-fit."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QGroupBox, QHBoxLayout, QLabel,
                               QPushButton, QSlider, QSpinBox, QVBoxLayout, QWidget)

from ..membar import STATUS_COLOUR, MemoryBar, mib
from .base import StatePage, quiet

STEPS = 1000  # slider resolution: 0.1 % of the split
OBJECTIVES = [("fastest", "fastest"), ("context", "longest context"), ("headroom", "most headroom")]


def _colour(label: QLabel, colour: str | None) -> None:
    """Text colour through the palette (a style sheet per update would re-polish the widget)."""
    if getattr(label, "_colour", None) == colour:
        return
    label._colour = colour
    pal = label.palette()
    pal.setColor(QPalette.WindowText, QColor(colour) if colour else label.parentWidget().palette().color(QPalette.WindowText))
    label.setPalette(pal)


class SplitPage(StatePage):
    def __init__(self, state):
        super().__init__(state, "Split", "Drag a card's share of the layers; the bars show where every MiB goes. "
                         "Auto-fit finds the fastest split that fits.")
        self.speed = QLabel()
        self.speed.setStyleSheet("font-size: 26pt; font-weight: 600;")
        self.speed.setToolTip("Predicted generation speed: every token reads each device's weights and KV cache "
                              "once, at that device's memory bandwidth.")
        self.compare = QLabel()
        self.compare.setWordWrap(True)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)

        self.sliders_box = QGroupBox("Tensor split (share of the offloaded layers)")
        self.sliders = QGridLayout(self.sliders_box)
        self.rows: dict[int, tuple] = {}
        self._row_key: tuple = ()

        self.layers = QSlider(Qt.Horizontal)
        self.layers.setToolTip("GPU layers (--gpulayers): the output layer goes first, then the last blocks. "
                               "The rest run on the CPU from system RAM.")
        self.layers.setPageStep(4)
        self.layers.valueChanged.connect(lambda v: self.guarded(lambda: self.state.set_gpulayers(v)))
        self.layers_spin = QSpinBox()
        self.layers_spin.valueChanged.connect(lambda v: self.guarded(lambda: self.state.set_gpulayers(v)))
        lrow = QHBoxLayout()
        lrow.addWidget(QLabel("GPU layers:"))
        lrow.addWidget(self.layers, 1)
        lrow.addWidget(self.layers_spin)

        self.objective = QComboBox()
        for key, label in OBJECTIVES:
            self.objective.addItem(label, key)
        self.objective.setToolTip("What auto-fit maximises; every device must fit either way.")
        self.autofit = QPushButton("Auto-fit")
        self.autofit.setToolTip("Set the sliders to the planner's answer; you can drag from there.")
        self.autofit.clicked.connect(self.run_autofit)
        arow = QHBoxLayout()
        arow.addWidget(self.objective)
        arow.addWidget(self.autofit)
        arow.addStretch(1)
        self.explain = QLabel()
        self.explain.setWordWrap(True)
        self.explain.setTextInteractionFlags(Qt.TextSelectableByMouse)

        left = QVBoxLayout()
        left.addWidget(self.sliders_box)
        left.addLayout(lrow)
        left.addLayout(arow)
        left.addWidget(self.explain)
        left.addStretch(1)

        self.bars_box = QGroupBox("Memory per device")
        self.bars = QVBoxLayout(self.bars_box)
        self.bar_rows: list[tuple[QLabel, MemoryBar, QLabel]] = []
        legend = QLabel("<span style='color:#4C78A8'>■</span> weights  <span style='color:#F58518'>■</span> KV cache  "
                        "<span style='color:#54A24B'>■</span> compute  <span style='color:#B279A2'>■</span> CUDA/runtime  "
                        "<span style='color:#9D9D9D'>▨</span> in use / kept free")
        right = QVBoxLayout()
        right.addWidget(self.speed)
        right.addWidget(self.compare)
        right.addWidget(self.verdict)
        right.addWidget(self.bars_box)
        right.addWidget(legend)
        right.addStretch(1)

        cols = QHBoxLayout(self)
        lw, rw = QWidget(), QWidget()
        lw.setLayout(left)
        rw.setLayout(right)
        cols.addWidget(lw, 5)
        cols.addWidget(rw, 6)

    # --- actions ---
    def run_autofit(self) -> None:
        if self.state.model is None:
            return
        self.state.run_auto_fit(self.objective.currentData())

    # --- rows ---
    def _build_rows(self) -> None:
        while self.sliders.count():
            w = self.sliders.takeAt(0).widget()
            if w:
                w.deleteLater()
        self.rows = {}
        st = self.state
        for r, gi in enumerate(st.devices):
            g = st.rig.gpus[gi]
            name = QLabel(g.short_name)
            s = QSlider(Qt.Horizontal)
            s.setRange(0, STEPS)
            s.setPageStep(50)
            s.setAccessibleName(f"split share of {g.short_name}")
            s.setToolTip(f"{g.short_name}: its share of the offloaded layers. Arrow keys: 0.1 %, Page Up/Down: 5 %.")
            spin = QDoubleSpinBox()
            spin.setRange(0, 100)
            spin.setDecimals(1)
            spin.setSuffix(" %")
            lock = QCheckBox("lock")
            lock.setToolTip("A locked card keeps its share while you move the others.")
            s.valueChanged.connect(lambda v, gi=gi: self.guarded(lambda: self.state.set_share(gi, v * 100.0 / STEPS)))
            spin.valueChanged.connect(lambda v, gi=gi: self.guarded(lambda: self.state.set_share(gi, v)))
            lock.toggled.connect(lambda on, gi=gi: self.guarded(lambda: self.state.set_locked(gi, on)))
            layers = QLabel()
            layers.setMinimumWidth(70)
            for c, w in enumerate((name, s, spin, lock, layers)):
                self.sliders.addWidget(w, r, c)
            self.sliders.setColumnStretch(1, 1)
            self.rows[gi] = (s, spin, lock, layers)
        while self.bars.count():
            w = self.bars.takeAt(0).widget()
            if w:
                w.deleteLater()
        self.bar_rows = []
        for _ in range(len(st.devices) + 1):
            head, bar, why = QLabel(), MemoryBar(), QLabel()
            head.setTextFormat(Qt.PlainText)  # plain text lays out far faster than rich text on every drag
            why.setTextFormat(Qt.PlainText)
            why.setWordWrap(True)
            for w in (head, bar, why):
                self.bars.addWidget(w)
            self.bar_rows.append((head, bar, why))
        self._row_key = tuple(st.devices)

    def refresh(self) -> None:
        st = self.state
        self._updating = True
        try:
            if tuple(st.devices) != self._row_key:
                self._build_rows()
            plan = st.plan()
            n_max = st.max_layers
            ngl = n_max if st.gpulayers is None else st.gpulayers
            with quiet(self.layers, self.layers_spin):
                self.layers.setRange(0, n_max)
                self.layers_spin.setRange(0, n_max)
                self.layers.setValue(ngl)
                self.layers_spin.setValue(ngl)
            self.sliders_box.setEnabled(bool(st.devices) and st.model is not None)
            self.autofit.setEnabled(st.model is not None)
            if plan is None:
                self.speed.setText("—")
                self.verdict.setText("Choose a model first.")
                return
            by_gpu = {d.gpu_index: d for d in plan.gpus}
            for gi, (s, spin, lock, lab) in self.rows.items():
                share = st.percent(gi)
                with quiet(s, spin, lock):
                    s.setValue(round(share * STEPS / 100.0))
                    spin.setValue(share)
                    lock.setChecked(gi in st.locked)
                s.setEnabled(gi not in st.locked)
                spin.setEnabled(gi not in st.locked)
                d = by_gpu.get(gi)
                lab.setText(f"{d.layers} layers" if d else "")
            for (head, bar, why), d in zip(self.bar_rows, plan.devices):
                status = {"ok": "fits", "tight": "TIGHT", "oom": "OUT OF MEMORY"}[d.status]
                head.setText(f"{d.name} · {d.layers} layers · {mib(d.total_bytes)} of {mib(d.usable_bytes)} usable · {status}")
                _colour(head, STATUS_COLOUR[d.status] if d.status != "ok" else None)
                bar.set_device(d)
                why.setText(d.reason())
                _colour(why, STATUS_COLOUR[d.status])
                if why.isVisibleTo(self) != bool(d.reason()):  # a visibility flip relayouts the page
                    why.setVisible(bool(d.reason()))
            self.speed.setText(f"{plan.predicted_tokens_per_s:.1f} tokens/s")
            cmp = ""
            if st.baseline is not None:
                b = st.baseline.predicted_tokens_per_s
                ratio = plan.predicted_tokens_per_s / b if b else 0
                cmp = (f"What you had before ({st.baseline_name}): {b:.1f} tokens/s"
                       f"{'' if st.baseline.fits else ', does not fit'} → now {ratio:.2f}×")
            self.compare.setText(cmp + ("" if not cmp else "<br>") +
                                 f"prompt processing, rough: {plan.predicted_prompt_tokens_per_s:.0f} tokens/s")
            if plan.fits:
                self.verdict.setText(f"<span style='color:{STATUS_COLOUR['ok']}'>Every device fits.</span>")
            else:
                self.verdict.setText("<br>".join(f"<span style='color:{STATUS_COLOUR['oom']}'>{r}</span>"
                                                 for r in plan.reasons()))
            self.explain.setText("<br>".join(st.current_explanation() + plan.warnings))
        finally:
            self._updating = False
