"""'What fits this PC?': every standard quant of the chosen model at one context and KV cache type, planned on
this rig (planner/advisor.py), as a plot of predicted tokens/s against the published quality cost and a table
beside it. Picking a quant that is on disk opens that file; picking one that is not says which file to get
and what Phoenix would run with it."""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                               QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout)

from ..model.quants import file_name_for, own_quant, quants_on_disk, source_of_model
from ..planner.advisor import COMMON, KV_TYPES, advise, comparable_quality, contexts_for
from .worker import OwnedTask

COLUMNS = ("quant", "file", "fits", "GPU layers", "tokens/s", "likely", "prompt t/s", "quality (published)", "on disk")
COLOURS = {"fits": (46, 139, 87), "tight": (230, 140, 20), "does not fit": (200, 40, 40)}


class AdvisorDialog(QDialog):
    """Owned by the Model page. open_file(path) is emitted when the user picks a quant that is on disk."""

    open_file = Signal(str)

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.setWindowTitle("What fits this PC?")
        self.state = state
        self.task = OwnedTask(self)
        self.advice = None
        self.present: dict = {}
        self.own = None
        model = state.model
        self.context = QComboBox()
        for c in contexts_for(model):
            self.context.addItem(f"{c:,} tokens", c)
        here = self.context.findData(state.context)
        self.context.setCurrentIndex(here if here >= 0 else min(1, self.context.count() - 1))
        self.context.setAccessibleName("Context")
        self.kv = QComboBox()
        for k in KV_TYPES:
            self.kv.addItem(f"KV cache {k}", k)
        self.kv.setAccessibleName("KV cache type")
        self.context.currentIndexChanged.connect(self.refresh)
        self.kv.currentIndexChanged.connect(self.refresh)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.plot = pg.PlotWidget()
        self.plot.setBackground(None)
        self.plot.setLabel("left", "predicted tokens/s")
        self.plot.setLabel("bottom", "quality cost: KL divergence (published)")
        self.plot.setLogMode(x=True, y=False)
        # a few named ticks: pyqtgraph's own log ticks print every minor step and overlap
        self.plot.getAxis("bottom").setTicks([[(math.log10(v), f"{v:g}") for v in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3)],
                                              []])
        self.plot.setMinimumSize(260, 200)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._picked)
        self.detail = QLabel("Pick a row: a quant on disk opens that file; one that is not says which file to get.")
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.use = QPushButton("Open this file")
        self.use.setEnabled(False)
        self.use.clicked.connect(self._open)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        top = QHBoxLayout()
        top.addWidget(self.context)
        top.addWidget(self.kv)
        top.addStretch(1)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.plot)
        split.addWidget(self.table)
        split.setStretchFactor(1, 2)
        split.setSizes([380, 620])  # the table's columns are the reading; the plot the overview
        buttons = QHBoxLayout()
        buttons.addWidget(self.detail, 1)
        buttons.addWidget(self.use)
        buttons.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.progress)
        lay.addWidget(self.summary)
        lay.addWidget(split, 1)
        lay.addLayout(buttons)
        self.resize(1000, 560)
        self.src = None  # the model's Source, read with the quants beside its file by the first plan's worker
        self.refresh()

    @staticmethod
    def _files(model, path):
        """(the model's Source, its own quant, the quants beside its file): headers only, but a folder of big
        models takes seconds, so the worker reads them, once."""
        src = source_of_model(model)
        return src, own_quant(src), (quants_on_disk(path, src) if model.parts and path else {})

    def refresh(self) -> None:
        """Plan every quant at the chosen context and KV type on a worker thread (a newer choice supersedes)."""
        st = self.state
        ctx, kv = self.context.currentData(), self.kv.currentData()
        model, rig, base, path = st.model, st.rig, st.settings(), st.model_path
        files = (self.src, self.own, dict(self.present)) if self.src is not None else None
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.summary.setText(f"Planning every quant of {model.name} at {ctx:,} tokens, KV cache {kv}…")

        def work(cancel):
            src, own, present = files or self._files(model, path)
            return (src, own, present), advise(model, rig, base, src, list(COMMON), [ctx], (kv,), present,
                                               comparable_quality, cancelled=cancel.is_set)

        self.task.run(work, self._show, self._failed)

    def _failed(self, e: BaseException) -> None:
        self.progress.setVisible(False)
        self.summary.setText(f"The table could not be planned ({type(e).__name__}: {e}).")

    def _show(self, result) -> None:
        (self.src, self.own, self.present), advice = result
        self.advice = advice
        self.progress.setVisible(False)
        rows = advice.rows
        fits = sum(r.fits for r in rows)
        where = f"from {self.state.model_path}" if self.state.model_path else "from the preset"
        mix = f"a {self.own} file" if self.own else "a custom mix: the other sizes are llama-quantize's standard mixes"
        self.summary.setText(f"{len(rows)} quants planned in {advice.seconds:.1f} s ({where}, {mix}); {fits} fit this "
                             "PC. Speeds are predictions with their likely range; quality is the published loss "
                             "against the 16-bit model, measured on the model named.")
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            lo, hi = r.plan.speed_band
            q = r.quality
            qual = "no measurement" if q is None else f"{q['metric']} {q['value']:.3g} ({q['model']})"
            cells = (r.quant, f"{r.file_bytes / 1e9:.2f} GB" + (" (estimate)" if r.estimate else ""), r.status(),
                     f"{r.plan.gpulayers}/{r.plan.n_layer + 1}", f"{r.tokens_per_s:.2f}", f"{lo:.1f}–{hi:.1f}",
                     f"{r.plan.predicted_prompt_tokens_per_s:.0f}", qual, "yes" if r.present else "")
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j == 2:
                    item.setForeground(pg.mkColor(COLOURS[r.status()]))
                if q is not None and j == 7:
                    item.setToolTip(q["source"])
                self.table.setItem(i, j, item)
        self._plot(rows)

    def _plot(self, rows) -> None:
        self.plot.clear()
        for r in rows:
            q = r.quality
            if q is None or q["metric"] != "kld" or not (q["value"] > 0 and math.isfinite(q["value"])):
                continue  # the x axis is KL divergence: rows measured otherwise are in the table only
            colour = COLOURS[r.status()]
            self.plot.plot([q["value"]], [r.tokens_per_s], pen=None, symbol="o", symbolSize=9,
                           symbolBrush=pg.mkBrush(*colour), symbolPen=pg.mkPen(*colour))
            label = pg.TextItem(r.quant, color=colour, anchor=(0, 1))
            label.setPos(math.log10(q["value"]), r.tokens_per_s)
            self.plot.addItem(label)

    def _row(self):
        i = self.table.currentRow()
        return self.advice.rows[i] if self.advice and 0 <= i < len(self.advice.rows) else None

    def _picked(self) -> None:
        r = self._row()
        if r is None:
            return
        p = r.plan
        plan = (f"{p.gpulayers} of {p.n_layer + 1} layers on the GPUs, {r.tokens_per_s:.1f} tokens/s predicted "
                f"({p.speed_band[0]:.1f}–{p.speed_band[1]:.1f})" if r.fits else
                "it does not fit this PC at this context, even with layers in RAM")
        if r.present:
            self.detail.setText(f"{r.quant} is on disk: {r.present}. Phoenix will open it and plan {plan}.")
            self.use.setEnabled(True)
        else:
            name = file_name_for(self.state.model_path or f"{self.state.model.name}.gguf", self.own, r.quant)
            imatrix = " It needs an importance matrix to make (llama-quantize --imatrix)." if r.needs_imatrix else ""
            self.detail.setText(f"{r.quant} is not on disk: get {name} ({r.file_bytes / 1e9:.2f} GB). With it Phoenix "
                                f"would run {plan}.{imatrix}")
            self.use.setEnabled(False)

    def _open(self) -> None:
        r = self._row()
        if r is not None and r.present:
            self.open_file.emit(str(r.present))
            self.accept()
