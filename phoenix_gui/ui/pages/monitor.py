"""Page 6: the running server — live VRAM, utilisation and tokens/s, predicted vs actual memory,
the benchmark, the log."""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QDoubleSpinBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QPlainTextEdit, QPushButton,
                               QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ...backends.lifecycle import State
from ..membar import mib
from ..worker import OwnedTask
from .base import StatePage, banner

pg.setConfigOptions(useOpenGL=False, antialias=False, background=None, foreground="k")
COLOURS = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D"]
WINDOW_S = 60.0
REMOTE_EVERY_S = 5.0  # another PC's memory, from its `phoenix share` info endpoint: an HTTP round trip each


class MonitorPage(StatePage):
    def __init__(self, state, session):
        super().__init__(state, "Monitor", "The running server: memory per GPU, utilisation and tokens/s, live.")
        self.session = session
        self._remote = OwnedTask(self)  # other PCs' memory, asked on the worker
        self.remote_info: dict[str, dict] = {}  # node address -> its last /info
        self._remote_at = 0.0
        self.status = QLabel("No server running. Launch one from the previous page.")
        self.status.setWordWrap(True)
        self.status.setStyleSheet("font-size: 12pt;")
        self.error = banner(kind="error")
        self.warn = banner(kind="warn")  # ready, but not as planned (no layer reached a GPU)
        self.stop_btn = QPushButton("Stop / cancel")
        self.stop_btn.setToolTip("Stop the server (or cancel a load): its shutdown request first, then its whole "
                                 "process tree.")
        self.rate = QDoubleSpinBox()
        self.rate.setRange(0.5, 10.0)
        self.rate.setSingleStep(0.5)
        self.rate.setValue(session.hz)
        self.rate.setSuffix(" Hz")
        self.rate.setToolTip("How often the graphs sample (0.5-10 Hz); 1 Hz costs well under 1 % of a core.")
        self.rate.valueChanged.connect(lambda v: (session.set_rate(v), self.timer.setInterval(int(1000 / session.hz))))
        self.bench_btn = QPushButton("Benchmark")
        self.bench_btn.setToolTip("A fixed 512-token prompt, then 128 generated tokens; measured speeds next to the "
                                  "prediction, kept in a history per model, plan and hardware.")
        self.retry_btn = QPushButton("Retry with a smaller plan")
        self.retry_btn.setToolTip("Move layers off the GPU that ran out of memory (its shortfall plus a margin) and "
                                  "launch again.")
        self.csv_btn = QPushButton("Export CSV…")
        self.stop_btn.clicked.connect(self.stop)
        self.bench_btn.clicked.connect(lambda: session.benchmark())
        self.retry_btn.clicked.connect(session.retry_smaller)
        self.csv_btn.clicked.connect(self.export_csv)
        self.retry_btn.setVisible(False)
        buttons = QHBoxLayout()
        for b in (self.stop_btn, self.bench_btn, self.retry_btn, self.csv_btn):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(QLabel("sampling:"))
        buttons.addWidget(self.rate)
        self.now = QLabel()
        self.now.setWordWrap(True)
        self.bench = QLabel()
        self.bench.setWordWrap(True)

        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["device", "predicted", "actual (engine log)", "difference"])
        self.table.verticalHeader().setVisible(False)
        # every column as wide as its header or its widest cell, before and after a run
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setToolTip("Weights + KV cache + compute buffers, from the engine's own log (another PC's "
                              "devices too: their RPCn[address] lines). The CUDA context and pools are not in "
                              "the log; the monitor's VRAM graph shows them for this PC's GPUs.")

        self.plots = pg.GraphicsLayoutWidget()
        self.vram = self.plots.addPlot(row=0, col=0, title="VRAM used (MiB)")
        self.util = self.plots.addPlot(row=1, col=0, title="GPU utilisation (%)")
        self.tps = self.plots.addPlot(row=2, col=0, title="tokens/s")
        for p in (self.vram, self.util, self.tps):
            # no grid: replaying its cached picture was most of the redraw cost
            p.setLabel("bottom", "seconds")
            p.addLegend(offset=(5, 5))
            p.setMouseEnabled(x=False, y=False)
            p.setXRange(-WINDOW_S, 0, padding=0)  # data are plotted relative to now: the axis never moves
            p.setClipToView(True)
            p.setDownsampling(auto=True, mode="peak")
            p.hideButtons()
        self.util.setYRange(0, 100)
        self.tps.setYRange(0, 1)  # never an empty autorange's -40000..40000: 0 to the highest speed seen
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._gpu_plots = True

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(3000)
        self.log.setLineWrapMode(QPlainTextEdit.NoWrap)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.table, 1)
        rl.addWidget(self.log, 2)
        split = QSplitter(Qt.Horizontal)
        split.addWidget(self.plots)
        split.addWidget(right)
        split.setSizes([700, 500])
        lay = QVBoxLayout(self)
        lay.addWidget(self.status)
        lay.addWidget(self.error)
        lay.addWidget(self.warn)
        lay.addLayout(buttons)
        lay.addWidget(self.bench)
        lay.addWidget(self.now)
        lay.addWidget(split, 1)

        session.status.connect(self.status.setText)
        session.starting.connect(self.clear)
        session.lines.connect(self._append)
        session.ready.connect(self._ready)
        session.failed.connect(self._failed)
        session.benchmarked.connect(self._bench)
        session.transition.connect(lambda _old, _new, _info: self.refresh())  # buttons follow the state
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.update_plots)

    def stop(self) -> None:
        """Say "Stopping…" and grey the buttons before the stop, which can take seconds (a graceful shutdown, then
        the process tree): the page must not look as if nothing happened."""
        from PySide6.QtWidgets import QApplication

        self.status.setText("Stopping…")
        for b in (self.stop_btn, self.bench_btn, self.retry_btn):
            b.setEnabled(False)
        QApplication.processEvents()  # drawn now, not after the stop
        self.session.stop()
        self.status.setText("Stopped.")
        self.refresh()

    def _append(self, lines: list[str]) -> None:
        self.log.appendPlainText("\n".join(lines))

    def clear(self) -> None:
        """A new launch: nothing of the previous run stays on the page (log, traceback, table, graphs)."""
        self.remote_info = {}
        self._remote_at = 0.0
        self.log.clear()
        self.bench.clear()
        self.now.clear()
        self.error.setVisible(False)
        self.warn.setVisible(False)
        self.retry_btn.setVisible(False)
        self.table.setRowCount(0)
        for c in self.curves.values():
            c.setData([], [])

    def _ready(self, out) -> None:
        self.error.setVisible(False)
        self.retry_btn.setVisible(False)
        self.warn.setText("<br>".join(out.warnings))
        self.warn.setVisible(bool(out.warnings))
        self.table.setRowCount(len(out.comparison))
        for r, c in enumerate(out.comparison):
            diff = "" if c.actual_bytes is None else f"{(c.predicted_bytes - c.actual_bytes) / (1 << 20):+,.0f} MiB"
            for col, text in enumerate((c.name, mib(c.predicted_bytes), "—" if c.actual_bytes is None else mib(c.actual_bytes), diff)):
                self.table.setItem(r, col, QTableWidgetItem(text))
        self.timer.setInterval(int(1000 / self.session.hz))
        self.timer.start()
        self._show_gpu_plots(bool(self._local_gpus()))
        self.refresh()

    def _local_gpus(self) -> list:
        la = self.session.launch
        return [la.rig.gpus[d.gpu_index] for d in la.plan.gpus if not la.rig.gpus[d.gpu_index].is_remote] if la else []

    def _show_gpu_plots(self, on: bool) -> None:
        """VRAM and utilisation only where this PC has GPUs in the plan: on a PC without them there is nothing to
        measure, and an empty graph reads as a broken one."""
        if on == self._gpu_plots:
            return
        self._gpu_plots = on
        self.plots.clear()  # the items are kept (and re-added), only taken out of the grid
        for row, p in enumerate([self.vram, self.util, self.tps] if on else [self.tps]):
            self.plots.addItem(p, row=row, col=0)

    def _failed(self, f) -> None:
        self.error.setText(f.message)
        self.error.setVisible(True)
        self.retry_btn.setVisible(bool(f.is_oom))
        self.refresh()

    def _bench(self, res) -> None:
        from ...backends.bench import history

        runs = history(res.fingerprint)
        before = [r for r in runs if r.time < res.time]
        prev = (f" · {len(before)} earlier run(s) of this model, plan and hardware, last {before[-1].gen_tokens_per_s:,.1f} "
                "tokens/s" if before else "")
        self.bench.setText(f"<b>Benchmark</b>: prompt {res.prompt_tokens} tokens at {res.prompt_tokens_per_s:,.1f} tokens/s "
                           f"(predicted, rough: {res.predicted_prompt_tokens_per_s:,.0f}) · generation {res.gen_tokens} "
                           f"tokens at <b>{res.gen_tokens_per_s:,.1f} tokens/s</b> (predicted "
                           f"{res.predicted_tokens_per_s:,.1f}){prev}")

    def _curve(self, plot, key: str, name: str, colour: str, dash: bool = False):
        c = self.curves.get(key)
        if c is None:
            pen = pg.mkPen(colour, width=2, style=Qt.DashLine if dash else Qt.SolidLine)
            c = self.curves[key] = plot.plot([], [], pen=pen, name=name, connect="finite")
        return c

    def update_plots(self) -> None:
        m = self.session.monitor
        if m is None:
            return
        now = time.time()
        la = self.session.launch
        self._ask_remote(la)
        gpus = [(la.rig.gpus[d.gpu_index], d.name) for d in la.plan.gpus] if la else []
        total_t, total_v = None, None
        summary = []
        for i, (g, name) in enumerate(gpus):
            if g.is_remote:  # NVML here cannot see another PC's device: its share endpoint, when it has one
                summary.append(self._remote_text(g, name))
                continue
            uuid = g.uuid
            used, cap = m.series.get(f"{uuid}/mem_used_mib"), m.series.get(f"{uuid}/mem_total_mib")
            u, c = (used.last() if used else None), (cap.last() if cap else None)
            summary.append(f"{name}: {u:,.0f} / {c:,.0f} MiB ({100 * u / c:.0f} %)" if u is not None and c
                           else f"{name}: no reading")
            colour = COLOURS[i % len(COLOURS)]  # stable per GPU: its place in the plan
            for key, plot, dash, label in ((f"{uuid}/mem_used_mib", self.vram, False, name),
                                           (f"{uuid}/mem_total_mib", self.vram, True, f"{name} capacity"),
                                           (f"{uuid}/util_pct", self.util, False, name)):
                buf = m.series.get(key)
                if buf is None:
                    continue
                t, v = buf.data()
                sel = t >= now - WINDOW_S
                self._curve(plot, key, label, colour, dash).setData(t[sel] - now, v[sel])
                if key.endswith("mem_used_mib"):
                    total_t, total_v = (t[sel], v[sel]) if total_v is None else (total_t, total_v + v[sel][: len(total_v)])
        if total_v is not None and sum(not g.is_remote for g, _ in gpus) > 1:
            self._curve(self.vram, "total", "all GPUs", "#444444").setData(total_t - now, total_v)
        rss = m.series.get("server/rss_mib")
        if rss is not None and rss.last() is not None:
            summary.append(f"server process: {rss.last():,.0f} MiB RAM")
        self.now.setText(" · ".join(summary))
        top = 0.0
        for key, name, colour in (("server/gen_tps", "generation", "#E45756"), ("server/prompt_tps", "prompt", "#4C78A8")):
            buf = m.series.get(key)
            if buf is not None:
                t, v = buf.data()
                sel = t >= now - WINDOW_S
                self._curve(self.tps, key, name, colour).setData(t[sel] - now, v[sel])
                finite = v[sel][np.isfinite(v[sel])]
                top = max(top, float(finite.max()) if finite.size else 0.0)
        self.tps.setYRange(0, max(1.0, top * 1.1), padding=0)  # speeds are never negative

    def _ask_remote(self, la) -> None:
        """Every few seconds, the other PCs' own account of their devices' memory (on the worker)."""
        nodes = sorted({la.rig.gpus[d.gpu_index].node for d in la.plan.gpus} - {""}) if la else []
        if not nodes or self._remote.running or time.monotonic() - self._remote_at < REMOTE_EVERY_S:
            return
        self._remote_at = time.monotonic()

        def ask(_cancel):
            from ...backends.nodes import fetch_info, split_address

            return {a: fetch_info(*split_address(a), timeout=2.0) for a in nodes}

        self._remote.run(ask, lambda got: self.remote_info.update(got), lambda _e: None)

    def _remote_text(self, g, name: str) -> str:
        down = self.state.down.get(g.node)
        if down:  # its last memory reading is stale: say it is down instead
            self.remote_info.pop(g.node, None)
            return f"{name}: DOWN ({down})"
        info = self.remote_info.get(g.node)
        devs = info.get("devices") if info else None
        d = devs[g.index] if isinstance(devs, list) and g.index < len(devs) and isinstance(devs[g.index], dict) else {}
        total, free = d.get("total_bytes"), d.get("free_bytes")
        if not isinstance(total, int) or not isinstance(free, int) or total <= 0:
            return f"{name}: on {g.node}, not measured from this PC (it shares no Phoenix info)"
        used = (total - free) / (1 << 20)
        return f"{name}: {used:,.0f} / {total / (1 << 20):,.0f} MiB ({100 * used * (1 << 20) / total:.0f} %, as {g.node} reports)"

    def export_csv(self) -> None:
        if not self.session.monitor:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export samples", "phoenix-run.csv", "CSV (*.csv)")
        if path:
            self.session.monitor.export_csv(path)

    def refresh(self) -> None:
        running = self.session.running
        m = self.session.machine
        ready = running and m is not None and m.state is State.READY  # not while a benchmark runs
        self.stop_btn.setEnabled(running)
        self.bench_btn.setEnabled(ready)
        self.csv_btn.setEnabled(self.session.monitor is not None)
        if not running:
            self.timer.stop()
