"""The Tune dialog of the split page: measures candidate plans on this PC (backends/tune.Tuner), shows
progress with time left, a table and a predicted-vs-measured plot, the margin the recommendation keeps
free per GPU (sized from what was measured, or set here), and can put the winner on the sliders. The tuner is driven by a QTimer on the GUI thread through its non-blocking poll(), as the
server session drives its launch machine; the engine's version is read on a worker thread."""

from __future__ import annotations

import threading

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QDialog, QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QSpinBox,
                               QTableWidget, QTableWidgetItem, QVBoxLayout)

from ..backends.processes.ports import free_port
from ..backends.processes.process import engine_version
from ..engines import engine_named
from ..backends.calibrations import describe, find
from ..backends.tune import N_GEN, N_PROMPT, N_REPEATS, Tuner

COLUMNS = ("#", "run", "plan", "predicted", "measured", "spread", "calibrated", "load s", "outcome")
MEASURED = -1  # the margin box's value for "sized from what the tune measured"


def apply_calibration(state, version: str | None = None) -> str:
    """Put this PC's calibration for the chosen engine on the wizard's rig (or take off one that no
    longer applies); returns the sentence to show next to the prediction ("" when there is none)."""
    cal, note = find(state.rig, state.backend, version)
    state.set_calibration(cal)
    # A calibration is keyed to the cards it measured: on another rig (simulated, another PC added) it is simply
    # not used, and there is nothing to say about it.
    return note if cal is not None else ""


def calibration_note(state) -> str:
    cal = state.rig.calibration
    return describe(cal) if cal is not None else ""


class TunePanel(QDialog):
    finished_tune = Signal(object)  # the Tuner, done, failed or cancelled

    def __init__(self, state, parent=None, budget_s: float = 300.0, max_runs: int = 6):
        super().__init__(parent)
        self.setWindowTitle("Tune on this PC")
        self.state = state
        self.budget_s, self.max_runs = budget_s, max_runs
        self.tuner: Tuner | None = None
        self._version: str | None = None
        self.header = QLabel(f"Each plan is launched, given a fixed benchmark ({N_PROMPT} prompt tokens, then {N_GEN} "
                             f"generated tokens, {N_REPEATS} times: measured is the mean, spread how much the repeats "
                             f"differ) and stopped; at most {max_runs} runs in {budget_s:.0f} s.")
        self.header.setWordWrap(True)
        self.margin = QSpinBox()
        self.margin.setRange(MEASURED, 16384)
        self.margin.setSingleStep(32)
        self.margin.setSuffix(" MiB")
        self.margin.setSpecialValueText("sized from the runs")
        self.margin.setValue(MEASURED)
        self.margin.setAccessibleName("Margin kept free per GPU")
        self.margin.setToolTip("What the recommended plan keeps free on every GPU. The runs themselves may use "
                               "Phoenix's usual margin (a guess made before measuring), never more than is free.")
        self.margin.valueChanged.connect(self._margin_changed)
        self.margin_note = QLabel()
        self.margin_note.setWordWrap(True)
        margin_row = QHBoxLayout()
        margin_row.addWidget(QLabel("Margin kept free per GPU:"))
        margin_row.addWidget(self.margin)
        margin_row.addStretch(1)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.left = QLabel()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "predicted tokens/s (speed model)")
        self.plot.setLabel("left", "measured tokens/s")
        self.plot.setMinimumHeight(160)
        self.scatter = pg.ScatterPlotItem(size=10, brush=pg.mkBrush(40, 110, 200))
        self.plot.addItem(self.scatter)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        # the notes scroll in a box of their own: a long summary must not squeeze the table to a row or two
        self.summary_box = QScrollArea()
        self.summary_box.setWidgetResizable(True)
        self.summary_box.setFrameShape(QFrame.NoFrame)
        self.summary_box.setWidget(self.summary)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.cancel)
        self.use_btn = QPushButton("Use the winner")
        self.use_btn.setToolTip("Put the plan that measured fastest on the sliders.")
        self.use_btn.setEnabled(False)
        self.use_btn.clicked.connect(self.use_winner)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.cancel_btn)
        buttons.addStretch(1)
        buttons.addWidget(self.use_btn)
        buttons.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addWidget(self.header)
        lay.addLayout(margin_row)
        for w in (self.margin_note, self.bar, self.left, self.status, self.table, self.plot, self.summary_box):
            lay.addWidget(w)
        lay.addLayout(buttons)
        self.timer = QTimer(self)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._tick)
        self.resize(900, 700)

    # --- commands ---
    def start(self) -> str:
        """Begin (the first launch starts from the timer, once the engine's version is known). Returns
        why tuning cannot start, or ""."""
        st = self.state
        if st.model is None or not st.model_path:
            return "Tuning needs a model file (the demo preset has none)."
        backend = engine_named(st.backend)
        exe = st.executable or backend.find()
        if not exe:
            return f"No {backend.name} program was found; choose its executable on the Launch page."
        self._exe = exe
        self.status.setText(f"Reading the version of {exe}…")
        threading.Thread(target=lambda: setattr(self, "_version", engine_version(backend, exe)), daemon=True).start()
        self.timer.start()
        return ""

    def cancel(self) -> None:
        self.timer.stop()
        if self.tuner is not None:
            self.tuner.cancel()
            self._show()
            self.finished_tune.emit(self.tuner)
        self.cancel_btn.setEnabled(False)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.tuner is not None and self.tuner.state == "running" or self.timer.isActive():
            self.cancel()
        super().closeEvent(event)

    def use_winner(self) -> None:
        if self.tuner is not None and self.tuner.winner is not None:
            self.state.apply(self.tuner.recommended())  # the winner with the margin it keeps
            self.accept()  # done: the split page shows the winner, the dialog has nothing left to do

    def user_margin(self) -> float | None:
        return None if self.margin.value() == MEASURED else float(self.margin.value())

    def _margin_changed(self) -> None:
        if self.tuner is not None:
            self.tuner.set_margin(self.user_margin())
            self._show()
            self.use_btn.setEnabled(self.tuner.state == "done" and self.tuner.winner is not None)

    # --- the loop ---
    def _tick(self) -> None:
        if self.tuner is None:
            if self._version is None:
                return
            st = self.state
            # the runs get a port of their own: the wizard's server (or anything else) may hold the chosen one
            base = st.settings().with_(host="127.0.0.1", port=free_port())
            self.tuner = Tuner(st.model, st.rig, st.model_path, base, self._exe, budget_s=self.budget_s,
                               max_runs=self.max_runs, version=self._version, margin_mib=self.user_margin())
            self.tuner.start()
        running = self.tuner.poll()
        self._show()
        if not running:
            self.timer.stop()
            self.cancel_btn.setEnabled(False)
            if self.tuner.state == "done":
                apply_calibration(self.state, self._version)
                self.state.set_measured(self.tuner.measured())  # the split page shows these, not predictions
                self.use_btn.setEnabled(self.tuner.winner is not None)
            self.finished_tune.emit(self.tuner)

    def _show(self) -> None:
        t = self.tuner
        # full only for a tune that finished; one that failed or was cancelled shows how far it got
        done = 1.0 if t.state == "done" else t.fraction() if t.state == "running" else \
            sum(1 for r in t.runs if r.measured_tps) / max(1, self.max_runs)
        self.bar.setValue(int(1000 * done))
        self.left.setText(f"about {t.time_left():.0f} s left" if t.state == "running" else "")
        self.status.setText(t.message)
        self.margin_note.setText(t.margin_note)
        if self.table.rowCount() != len(t.runs) or t.state != "running":
            self.table.setRowCount(len(t.runs))
            for i, r in enumerate(t.runs):
                probe = " *" if r.past_margin else ""
                spread = "—" if r.spread is None else f"{r.spread:.1%}"
                cells = (str(i + 1), r.label, r.split + probe, _num(r.predicted_tps), _num(r.measured_tps), spread,
                         _num(r.calibrated_tps), "—" if r.load_s is None else f"{r.load_s:.1f}", r.outcome)
                for j, text in enumerate(cells):
                    self.table.setItem(i, j, QTableWidgetItem(text))
            self.table.resizeColumnsToContents()
            self._fit_rows()
            pts = [(r.predicted_tps, r.measured_tps) for r in t.runs if r.measured_tps]
            self.scatter.setData([p for p, _ in pts], [m for _, m in pts])
        if t.state == "done":
            c = t.calibration
            self.summary.setText("<br>".join(t.speedups() + t.notes() + [
                f"Learned ({describe(c)}): time per layer " + ", ".join(f"{k} {v:.3f} ms" for k, v in c.per_layer_ms.items()),
                t.message]))


    def _fit_rows(self) -> None:
        """Every run is a row, and every row is in sight: the table is never shorter than its rows."""
        t = self.table
        h = t.horizontalHeader().height() + 2 * t.frameWidth()
        h += sum(t.rowHeight(i) for i in range(t.rowCount()))
        if t.horizontalScrollBar().isVisible() or t.horizontalHeader().length() > t.viewport().width():
            h += t.horizontalScrollBar().sizeHint().height()
        if t.minimumHeight() != h:
            t.setMinimumHeight(h)


def _num(x) -> str:
    return f"{x:.2f}" if x else "—"
