"""Page 4: layers per GPU (whole layers, with locks), the split as koboldcpp text, GPU layers, live
per-device memory bars, auto-fit."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (QBoxLayout, QCheckBox, QComboBox, QDoubleSpinBox, QFrame, QGridLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QScrollArea, QSlider, QSpinBox, QVBoxLayout,
                               QWidget)

from ...hardware.cluster import ASSUMED_LINK, LOCAL, is_cpu_device, link_of, machine_of
from ...planner.placement import CPU
from ...planner.network import network_seconds
from ..binding import bind
from ..membar import STATUS_COLOUR, MemoryBar, legend_html, mib
from ..nodes_panel import link_text
from ...session import DEVICES, LAUNCH, MODEL, PLAN, RIG, SPLIT
from ..tune_panel import TunePanel, apply_calibration, calibration_note
from .base import StatePage, banner

OBJECTIVES = [("fastest", "fastest"), ("context", "longest context"), ("headroom", "most headroom")]
STATE_WORD = {"fits": "fits", "tight": "TIGHT", "short": "SHORT"}
GPU_LAYERS, OFFLOADED = "GPU layers:", "Layers off this PC's CPU:"  # the second when another PC's CPU holds some
STACK_BELOW_PX = 860  # narrower than this, the bars go under the controls instead of beside them


def _colour(label: QLabel, colour: str | None) -> None:
    """Text colour through the palette (a style sheet per update would re-polish the widget)."""
    if getattr(label, "_colour", None) == colour:
        return
    label._colour = colour
    pal = label.palette()
    pal.setColor(QPalette.WindowText, QColor(colour) if colour else label.parentWidget().palette().color(QPalette.WindowText))
    label.setPalette(pal)


def card_head(d) -> str:
    """The label over a device's bar: what it holds against what it may use, and its state with the one
    "short" figure (DevicePlan.short_bytes, the same as in the sentence under the bar)."""
    state = STATE_WORD[d.state] + (f" by {mib(d.short_bytes)}" if d.short_bytes else "")
    return f"{d.name} · {d.layers} layers · {mib(d.total_bytes)} of {mib(d.usable_bytes)} usable · {state}"


def what_to_do(d) -> str:
    """Under a card's bar: what its state means and what helps; its name, figures and state are on the label."""
    if d.state == "fits":
        return ""
    means = ("it will run out of memory" if d.state == "short" else
             "it eats into the memory Phoenix keeps free: it may load, but is not recommended")
    return f"{means[0].upper()}{means[1:]} — {d.advice()}."


def split_text(weights: list[float]) -> str:
    """The split as a user would type it for koboldcpp: whole numbers plain, others to 2 decimals."""
    return " ".join(f"{w:.0f}" if abs(w - round(w)) < 1e-9 else f"{w:.2f}".rstrip("0").rstrip(".") for w in weights)


def network_cost(plan, rig, model, address: str) -> tuple[float, int, float]:
    """(network seconds per generated token, bytes of weights sent at load, seconds to send them) for one
    other PC: the planner's own network term with only this PC's layers kept on it (each run of layers
    on a PC costs on its own, so the PCs' costs add up to the plan's)."""
    gpus = [rig.gpus[d.gpu_index] for d in plan.gpus]
    mine = [a if a != CPU and gpus[a].node == address else CPU for a in plan.assign]
    per_token = network_seconds(rig, gpus, mine, model.n_embd, model.n_vocab)
    sent = sum(d.weights_bytes for d, g in zip(plan.gpus, gpus) if g.node == address)
    link = link_of(rig, next(g for g in rig.gpus if g.node == address)) or ASSUMED_LINK
    return per_token, sent, sent / (link.throughput_mbs * 1e6)


def network_text(cost: tuple[float, int, float]) -> str:
    per_token, sent, load_s = cost
    if not sent:
        return "network: no layers on this PC"
    return (f"network: {per_token * 1000:.1f} ms per token · loading sends it {sent / 1e9:,.1f} GB of weights, "
            f"about {_duration(load_s)}")


def _duration(s: float) -> str:
    return f"{max(1, round(s))} s" if s < 180 else f"{s / 60:,.1f} min"


class CardRow:
    """One GPU's controls: a slider and a box in whole layers, its share in percent (typed decimals
    kept), and a lock."""

    def __init__(self, page: "SplitPage", gi: int, row: int):
        st = page.state
        self.gi = gi
        label = st.gpu_label(gi)
        self.name = QLabel(label)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setMinimumWidth(160)
        self.slider.setPageStep(4)
        self.slider.setAccessibleName(f"layers on {label}")
        self.slider.setToolTip(f"{label}: how many of the offloaded layers it holds. Arrow keys: one layer.")
        self.layers = QSpinBox()
        self.layers.setSuffix(" layers")
        self.layers.setAccessibleName(f"layers on {label} (number)")
        self.percent = QDoubleSpinBox()
        self.percent.setRange(0, 100)
        self.percent.setDecimals(2)
        self.percent.setSuffix(" %")
        self.percent.setToolTip("Its share of the split; decimals are kept as typed.")
        self.lock = QCheckBox("lock")
        self.lock.setToolTip("A locked card keeps its layers while you move the others.")
        say = page.say
        self.bindings = [
            bind(self.slider, st, (SPLIT, PLAN), lambda: st.layer_counts().get(gi, 0), lambda v: st.set_layers(gi, v), say),
            bind(self.layers, st, (SPLIT, PLAN), lambda: st.layer_counts().get(gi, 0), lambda v: st.set_layers(gi, v), say),
            bind(self.percent, st, SPLIT, lambda: round(st.percent(gi), 2), lambda v: st.set_share(gi, v), say),
            bind(self.lock, st, SPLIT, lambda: gi in st.locked, lambda on: st.set_locked(gi, on), say),
        ]
        for c, w in enumerate((self.name, self.slider, self.layers, self.percent, self.lock)):
            page.sliders.addWidget(w, row, c)

    def widgets(self):
        return (self.name, self.slider, self.layers, self.percent, self.lock)

    def drop(self, grid: QGridLayout) -> None:
        """Unbind first, then delete: no handler may outlive the widget it was made for."""
        for b in self.bindings:
            b.drop()
        for w in self.widgets():
            grid.removeWidget(w)
            w.deleteLater()

    def update_range(self, n: int, locked: bool) -> None:
        for w in (self.slider, self.layers):
            if w.maximum() != n:
                w.blockSignals(True)
                w.setRange(0, n)
                w.blockSignals(False)
            w.setEnabled(not locked)
        self.percent.setEnabled(not locked)
        for b in self.bindings:
            b.show()


class SplitPage(StatePage):
    topics = (DEVICES, SPLIT, MODEL, PLAN)

    def __init__(self, state):
        super().__init__(state, "Split", "Give each card whole layers; the bars show where every MiB goes. "
                         "Auto-fit finds the fastest split that fits.")
        st = self.state
        self.speed = QLabel()
        self.speed.setStyleSheet("font-size: 26pt; font-weight: 600;")
        self.speed.setToolTip("Predicted generation speed: every token reads each device's weights and KV cache "
                              "once, at that device's memory bandwidth.")
        self.compare = QLabel()
        self.compare.setWordWrap(True)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.error = banner(kind="error")

        self.sliders_box = QGroupBox("Layers per GPU")
        self.sliders = QGridLayout(self.sliders_box)
        self.sliders.setColumnStretch(1, 1)
        self.rows: dict[int, CardRow] = {}
        self._row_key: tuple | None = None
        self.split_edit = QLineEdit()
        self.split_edit.setToolTip("The same split as koboldcpp's --tensor_split: one weight per GPU in order, "
                                   "e.g. 1.5 4.5 3. Press Enter to apply.")
        bind(self.split_edit, st, (SPLIT, DEVICES), lambda: split_text([st.shares.get(i, 0.0) for i in st.devices]),
             st.set_split_text, self.say)
        srow = QHBoxLayout()
        srow.addWidget(QLabel("--tensor_split:"))
        srow.addWidget(self.split_edit, 1)

        self.layers = QSlider(Qt.Horizontal)
        self.layers.setToolTip("GPU layers (--gpulayers): the output layer goes first, then the last blocks. "
                               "The rest run on the CPU from system RAM.")
        self.layers.setPageStep(4)
        self.layers_spin = QSpinBox()
        self._range_layers()
        bind(self.layers, st, (SPLIT, DEVICES, MODEL), lambda: st.offloaded_layers, st.set_gpulayers, self.say)
        bind(self.layers_spin, st, (SPLIT, DEVICES, MODEL), lambda: st.offloaded_layers, st.set_gpulayers, self.say)
        lrow = QHBoxLayout()
        self.layers_label = QLabel(GPU_LAYERS)
        lrow.addWidget(self.layers_label)
        lrow.addWidget(self.layers, 1)
        lrow.addWidget(self.layers_spin)

        self.objective = QComboBox()
        for key, label in OBJECTIVES:
            self.objective.addItem(label, key)
        self.objective.setToolTip("What auto-fit maximises; every device must fit either way.")
        self.autofit = QPushButton("Auto-fit")
        self.autofit.setToolTip("Set the layers to the planner's answer; you can move them from there.")
        self.autofit.clicked.connect(self.run_autofit)
        arow = QHBoxLayout()
        arow.addWidget(self.objective)
        arow.addWidget(self.autofit)
        self.tune = QPushButton("Tune on this PC…")
        self.tune.setToolTip("Launch a few candidate plans with the real engine, measure each, learn this PC and "
                             "keep the fastest (about 5 minutes).")
        self.tune.clicked.connect(self.run_tune)
        self.tune_panel: TunePanel | None = None
        arow.addWidget(self.tune)
        arow.addStretch(1)
        self.explain = QLabel()
        self.explain.setWordWrap(True)
        self.explain.setTextInteractionFlags(Qt.TextSelectableByMouse)

        left = QVBoxLayout()
        left.addWidget(self.sliders_box)
        left.addLayout(srow)
        left.addLayout(lrow)
        left.addLayout(arow)
        left.addWidget(self.error)
        left.addWidget(self.explain)
        left.addStretch(1)

        self.bars_box = QGroupBox("Memory per device")
        self.bars = QVBoxLayout(self.bars_box)
        self.bar_rows: list[tuple[QLabel, MemoryBar, QLabel]] = []
        self.net_rows: dict[str, QLabel] = {}  # per other PC (address): its network cost
        self.group_heads: list[QLabel] = []  # one per PC, when there is more than this one
        self.legend = QLabel(legend_html())
        self.legend.setWordWrap(True)
        right = QVBoxLayout()
        right.addWidget(self.speed)
        self.calibrated = QLabel()  # "calibrated on this PC (N runs, DATE)" when a tune's calibration applies
        self._show_calibrated(apply_calibration(st))
        # another rig or engine: its own calibration, or a sentence saying why the old one no longer applies
        st.on((RIG, LAUNCH), lambda topics: self._show_calibrated(apply_calibration(st)))
        right.addWidget(self.calibrated)
        right.addWidget(self.compare)
        right.addWidget(self.verdict)
        right.addWidget(self.bars_box)
        right.addWidget(self.legend)
        right.addStretch(1)

        # Two columns side by side when there is room, one under the other when not, all in a scroll area:
        # a label is never squeezed below the height its wrapped text needs (that is what drew one card's
        # advice over the next card's label); the page scrolls instead.
        self.cols = QBoxLayout(QBoxLayout.LeftToRight)
        lw, rw = QWidget(), QWidget()
        lw.setLayout(left)
        rw.setLayout(right)
        self.cols.addWidget(lw, 6)
        self.cols.addWidget(rw, 5)
        content = QWidget()
        content.setLayout(self.cols)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # everything wraps to the width
        self.scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)

    def resizeEvent(self, e) -> None:  # noqa: N802 - Qt's name
        narrow = e.size().width() < STACK_BELOW_PX
        want = QBoxLayout.TopToBottom if narrow else QBoxLayout.LeftToRight
        if self.cols.direction() != want:
            self.cols.setDirection(want)
        super().resizeEvent(e)

    def _show_calibrated(self, text: str) -> None:
        """An empty line takes no room under the speed."""
        self.calibrated.setText(text)
        self.calibrated.setVisible(bool(text))

    def say(self, sentence: str) -> None:
        self.error.setText(sentence)
        self.error.setVisible(True)

    # --- actions ---
    def run_autofit(self) -> None:
        if self.state.model is None:
            return
        self.state.run_auto_fit(self.objective.currentData())

    def run_tune(self) -> None:
        panel = TunePanel(self.state, self)
        why = panel.start()
        if why:
            self.say(why)
            return
        panel.finished_tune.connect(lambda t: self._show_calibrated(calibration_note(self.state)))
        self.tune_panel = panel
        panel.show()

    # --- rows ---
    def _range_layers(self) -> None:
        n = self.state.max_layers
        for w in (self.layers, self.layers_spin):
            if w.maximum() != n:
                w.blockSignals(True)
                w.setRange(0, n)
                w.setValue(self.state.offloaded_layers)
                w.blockSignals(False)

    def _build_rows(self) -> None:
        for r in self.rows.values():
            r.drop(self.sliders)
        st = self.state
        self.rows = {gi: CardRow(self, gi, r) for r, gi in enumerate(st.devices)}
        self._tab_order()
        while self.bars.count():
            w = self.bars.takeAt(0).widget()
            if w:
                w.deleteLater()
        self.bar_rows, self.net_rows, self.group_heads = [], {}, []
        # One group per PC, in the engine's order (the other PCs' devices first, then this PC's with its
        # CPU / RAM): the bars then read in the order the layers flow and the --tensor_split is written,
        # and each heading is a machine boundary the activations cross.
        keys = [st.rig.gpus[i].node for i in st.devices] + [""]
        clustered = any(keys)
        for k, key in enumerate(keys):
            if clustered and (k == 0 or keys[k - 1] != key):
                self.bars.addWidget(self._group_head(key))
                if key:  # what the network costs this PC: per token and at load
                    net = self.net_rows[key] = QLabel()
                    net.setTextFormat(Qt.PlainText)
                    net.setWordWrap(True)
                    self.bars.addWidget(net)
            if self.bar_rows:
                self.bars.addSpacing(6)  # a card's advice is not read as the next card's
            head, bar, why = QLabel(), MemoryBar(), QLabel()
            head.setTextFormat(Qt.PlainText)  # plain text lays out far faster than rich text on every drag
            why.setTextFormat(Qt.PlainText)
            for w in (head, why):
                w.setWordWrap(True)  # wrapped whole, never cut off or drawn over the next card
            for w in (head, bar, why):
                self.bars.addWidget(w)
            self.bar_rows.append((head, bar, why))
        self._row_key = (tuple(st.devices), id(st.rig))  # by identity: comparing rigs field by field is slow

    def _tab_order(self) -> None:
        """Tab walks the page as it reads: each card's row (made after the controls below it, so Qt would put
        it last), then the split text, GPU layers, the objective, Auto-fit and Tune."""
        chain = [w for r in self.rows.values() for w in (r.slider, r.layers, r.percent, r.lock)]
        chain += [self.split_edit, self.layers, self.layers_spin, self.objective, self.autofit, self.tune]
        for a, b in zip(chain, chain[1:]):
            QWidget.setTabOrder(a, b)

    def _group_head(self, node: str) -> QLabel:
        st = self.state
        if node:
            g = next(g for g in st.rig.gpus if g.node == node)
            name = machine_of(st.rig, g)
            text = f"{name} ({node}) · {link_text(link_of(st.rig, g))}" if name != node else f"{node} · {link_text(link_of(st.rig, g))}"
        else:
            text = LOCAL
        head = QLabel(text)
        head.setTextFormat(Qt.PlainText)
        head.setWordWrap(True)  # a long PC name and its link must not be cut off
        head.setStyleSheet("font-weight: 600; margin-top: 6px;")
        self.group_heads.append(head)
        return head

    def refresh(self) -> None:
        st = self.state
        if (tuple(st.devices), id(st.rig)) != self._row_key:
            self._build_rows()
        self._range_layers()
        # --gpulayers counts every offloaded layer: on another PC's CPU too, and then they are not all on GPUs
        remote_cpu = any(is_cpu_device(st.rig.gpus[i]) for i in st.devices)
        self.layers_label.setText(OFFLOADED if remote_cpu else GPU_LAYERS)
        gpu_plan = bool(st.devices) and st.model is not None
        self.sliders_box.setVisible(bool(st.devices))
        for w in (self.sliders_box, self.split_edit, self.layers, self.layers_spin):
            w.setEnabled(gpu_plan)
        self.autofit.setEnabled(st.model is not None)
        self.tune.setEnabled(st.model is not None)
        plan = st.plan()
        if plan is None:
            self.speed.setText("—")
            self.verdict.setText("Choose a model first.")
            return
        n = st.offloaded_layers
        for gi, row in self.rows.items():
            row.update_range(n, gi in st.locked)
        for (head, bar, why), d in zip(self.bar_rows, plan.devices):
            head.setText(card_head(d))
            _colour(head, STATUS_COLOUR[d.state] if d.state != "fits" else None)
            bar.set_device(d)
            reason = what_to_do(d)
            why.setText(reason)
            _colour(why, STATUS_COLOUR[d.state])
            if why.isVisibleTo(self) != bool(reason):  # a visibility flip relayouts the page
                why.setVisible(bool(reason))
        for address, net in self.net_rows.items():
            net.setText(network_text(network_cost(plan, st.rig, st.model, address)))
        self._show_speed(plan)
        self.explain.setText("<br>".join(st.current_explanation() + plan.warnings))

    def _show_speed(self, plan) -> None:
        """A plan that would not load has no speed to show, and no ratio against it either way."""
        st = self.state
        measured = st.measured_speed(plan)
        if plan.fits:
            tps = measured[0] if measured else plan.predicted_tokens_per_s
            if plan.speed_caveat and not measured:  # a known engine limit: the headline is the band that includes it
                lo, hi = plan.speed_band
                self.speed.setText(f"{lo:.1f}–{hi:.1f} tokens/s")
            else:
                self.speed.setText(f"{tps:.1f} tokens/s")
            _colour(self.speed, None)
        else:
            self.speed.setText("does not fit")
            _colour(self.speed, STATUS_COLOUR["short"])
        lines = []
        if measured:  # a plan the tune ran: its measurement, not the prediction (which the line keeps)
            runs = f"{measured[1]} run{'s' if measured[1] > 1 else ''}"
            lines.append(f"measured by the tune on this PC ({runs}); predicted {plan.predicted_tokens_per_s:.1f}")
        if plan.fits and plan.speed_caveat and not measured:
            caveat = html.escape(plan.speed_caveat[0].upper() + plan.speed_caveat[1:], quote=False)  # names come from other PCs
            lines.append(f"<b>{caveat}</b>: the speed model alone says "
                         f"{plan.predicted_tokens_per_s:.1f} tokens/s.")
        if plan.fits:
            # how sure: the held-out error of plans like this one, and the cost of a full cache
            lo, hi = plan.speed_band
            lines.append(f"likely {lo:.1f}–{hi:.1f} · {plan.tokens_per_s_full:.1f} at full context")
            if plan.speed_band_note:  # its quant family or device class has too few held-out rows
                lines[-1] += f" · {plan.speed_band_note}"
        lines.append(f"{st.context:,} tokens of context")  # what "longest context" found, and what "full" means
        b = st.baseline
        if b is not None:
            if not b.fits:  # why not is each card's business: said once, under its bar, for the plan shown
                lines.append(f"What you had before ({st.baseline_name}) would not load.")
            elif plan.fits:
                lines.append(f"What you had before ({st.baseline_name}): {b.predicted_tokens_per_s:.1f} tokens/s "
                             f"→ now {plan.predicted_tokens_per_s / b.predicted_tokens_per_s:.2f}×")
            else:
                lines.append(f"What you had before ({st.baseline_name}): {b.predicted_tokens_per_s:.1f} tokens/s; "
                             "this plan would not load.")
        if plan.fits:
            lines.append(f"prompt processing, rough: {plan.predicted_prompt_tokens_per_s:.0f} tokens/s")
        self.compare.setText("<br>".join(lines))
        bad = [d for d in plan.devices if d.state != "fits"]
        if not bad:
            self.verdict.setText(f"<span style='color:{STATUS_COLOUR['fits']}'>Every device fits.</span>")
        else:  # the count only: each card says its state and what to do once, under its own bar
            worst = "short" if any(d.state == "short" for d in bad) else "tight"
            names = ", ".join(d.name for d in bad)
            self.verdict.setText(f"<span style='color:{STATUS_COLOUR[worst]}'>{len(bad)} of {len(plan.devices)} "
                                 f"devices do not fit ({names}): see under their bars.</span>")
