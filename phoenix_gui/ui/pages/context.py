"""Page 3: context size, KV cache type, flash attention, batch, MoE expert offload — KV cost live."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QSpinBox, QVBoxLayout

from ..binding import bind
from ...session import CONTEXT, MODEL, PLAN
from ..ticks import TickedSlider
from .base import StatePage, banner

STOPS = [2048, 4096, 8192, 12288, 16384, 24576, 32768, 49152, 65536, 98304, 131072, 196608, 262144]
KV_TYPES = [("f16", "f16 — full precision"), ("q8_0", "q8_0 — half the memory, near-lossless"),
            ("q4_0", "q4_0 — a quarter, some quality loss")]
BATCHES = [128, 256, 512, 1024, 2048]
MIB = 1 << 20
STEP = 256  # the context moves in whole 256-token steps (llama.cpp pads the cache to 256)


class ContextPage(StatePage):
    topics = (CONTEXT, MODEL, PLAN)

    def __init__(self, state):
        super().__init__(state, "Context & cache", "How many tokens the model keeps in view, and how its KV cache is stored.")
        self.ticked = TickedSlider()
        self.slider = self.ticked.slider
        self.slider.setToolTip("Context size in steps of 256 tokens. Arrow keys: one step; Page Up/Down: 4k.")
        self.slider.setSingleStep(1)
        self.slider.setPageStep(16)
        self.ticked.picked.connect(lambda v: self.state.set_context(v * STEP))
        self.spin = QSpinBox()
        self.spin.setRange(STEP, 1 << 20)
        self.spin.setSingleStep(STEP)
        self.spin.setSuffix(" tokens")
        self.kv = QComboBox()
        for key, label in KV_TYPES:
            self.kv.addItem(label, key)
        self.kv.setToolTip("Type of the KV cache. A quantized V cache needs flash attention.")
        self.fa = QCheckBox("Flash attention")
        self.fa.setToolTip("Keeps the compute buffer nearly flat in context; needed for a quantized V cache.")
        self.batch = QComboBox()
        for b in BATCHES:
            self.batch.addItem(str(b), b)
        self.batch.setToolTip("Tokens processed per step while reading the prompt (n_ubatch). Bigger = faster prompts, "
                              "bigger compute buffers on every GPU.")
        self.moe = QSpinBox()
        self.moe.setToolTip("Keep the experts of the first N layers in system RAM (--moecpu / --n-cpu-moe). "
                            "Attention stays on the GPUs; frees VRAM at some speed cost.")
        self.threads = QSpinBox()
        self.threads.setRange(0, 4096)
        self.threads.setSpecialValueText("the engine's choice")
        self.threads.setAccessibleName("CPU threads")
        self.threads.setToolTip("CPU threads for the layers in system RAM (--threads / -t). The engine's choice: "
                                "koboldcpp about half the logical CPUs, llama-server the physical cores.")
        self.kept = QLabel()  # the engine options a .kcpps set that Phoenix keeps as they were
        self.kept.setWordWrap(True)
        self.kept.setTextFormat(Qt.PlainText)
        self.cost = QLabel()
        self.cost.setStyleSheet("font-size: 15pt;")
        self.cost.setWordWrap(True)
        self.note = banner(kind="warn")
        self.error = banner(kind="error")
        row = QHBoxLayout()
        row.addWidget(self.ticked, 1)
        row.addWidget(self.spin)
        form = QFormLayout()
        form.addRow("Context:", row)
        form.addRow("KV cache type:", self.kv)
        form.addRow("", self.fa)
        form.addRow("Batch size:", self.batch)
        self.moe_label = QLabel("MoE experts in RAM:")
        form.addRow(self.moe_label, self.moe)
        form.addRow("CPU threads:", self.threads)
        form.addRow("", self.kept)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(self.note)
        lay.addWidget(self.cost)
        lay.addStretch(1)
        self._limit = None

        st = self.state
        say = self._say
        self._range()  # ranges before values: a value outside the range would be clamped
        bind(self.slider, st, CONTEXT, lambda: st.context // STEP, lambda v: st.set_context(v * STEP), say)
        bind(self.spin, st, CONTEXT, lambda: st.context, st.set_context, say)
        bind(self.kv, st, CONTEXT, lambda: st.cache_type, st.set_cache_type, say)
        bind(self.fa, st, CONTEXT, lambda: st.flash_attn, st.set_flash_attn, say)
        bind(self.batch, st, CONTEXT, lambda: st.batch, st.set_batch, say)
        bind(self.moe, st, (CONTEXT, MODEL), lambda: st.moecpu, st.set_moecpu, say)
        bind(self.threads, st, CONTEXT, lambda: st.threads or 0, lambda n: st.set_threads(n or None), say)

    def _say(self, sentence: str) -> None:
        self.error.setText(sentence)
        self.error.setVisible(True)

    def _range(self) -> None:
        """Slider and box ranges follow the model's trained context."""
        limit = self.state.context_limit if self.state.model else 131072
        if limit == self._limit:
            return
        self._limit = limit
        for w in (self.slider, self.spin):
            w.blockSignals(True)
        self.slider.setRange(1, limit // STEP)
        self.spin.setRange(STEP, limit)
        self.slider.setValue(self.state.context // STEP)
        self.spin.setValue(self.state.context)
        for w in (self.slider, self.spin):
            w.blockSignals(False)
        self.ticked.set_ticks([(s // STEP, f"{s // 1024}k", f"{s:,} tokens") for s in STOPS if s <= limit])

    def refresh(self) -> None:
        st = self.state
        self._range()
        moe = bool(st.model and st.model.is_moe)
        self.moe.setVisible(moe)
        self.moe_label.setVisible(moe)
        if moe and self.moe.maximum() != st.model.n_layer:
            self.moe.blockSignals(True)
            self.moe.setRange(0, st.model.n_layer)
            self.moe.setValue(st.moecpu)
            self.moe.blockSignals(False)
        kept = st.kept_text()
        self.kept.setText(kept)
        self.kept.setVisible(bool(kept))
        p = st.plan()
        if p is not None:
            kv = sum(d.kv_bytes for d in p.devices)
            comp = max(d.compute_bytes for d in p.devices)
            self.cost.setText(f"KV cache: <b>{kv / MIB:,.0f} MiB</b> for {p.kv_cells:,} cells "
                              f"({kv / max(1, p.kv_cells) / 1024:.0f} KiB per token) · largest compute buffer "
                              f"{comp / MIB:,.0f} MiB")
        notes = []
        if st.cache_type != "f16" and not st.flash_attn:
            notes.append("A quantized V cache needs flash attention: with it off, only K is quantized (koboldcpp) "
                         "and V stays f16.")
        if st.model and st.model.sliding_window:
            notes.append(f"{sum(st.model.swa_layers)} of {st.model.n_layer} layers use a {st.model.sliding_window}-token "
                         "sliding window: their cache does not grow with the context.")
        self.note.setText(" ".join(notes))
        self.note.setVisible(bool(notes))
        self.error.setVisible(False)
