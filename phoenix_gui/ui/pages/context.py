"""Page 3: context size, KV cache type, flash attention, batch, MoE expert offload — KV cost live."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QSlider, QSpinBox, QVBoxLayout

from .base import StatePage, banner, quiet

STOPS = [2048, 4096, 8192, 12288, 16384, 24576, 32768, 49152, 65536, 98304, 131072, 196608, 262144]
KV_TYPES = [("f16", "f16 — full precision"), ("q8_0", "q8_0 — half the memory, near-lossless"),
            ("q4_0", "q4_0 — a quarter, some quality loss")]
BATCHES = [128, 256, 512, 1024, 2048]
MIB = 1 << 20


class ContextPage(StatePage):
    def __init__(self, state):
        super().__init__(state, "Context & cache", "How many tokens the model keeps in view, and how its KV cache is stored.")
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setToolTip("Context size in steps of 256 tokens. Arrow keys: one step; Page Up/Down: 4k.")
        self.slider.setSingleStep(1)
        self.slider.setPageStep(16)
        self.slider.valueChanged.connect(lambda v: self.guarded(lambda: self.state.set_context(v * 256)))
        self.spin = QSpinBox()
        self.spin.setRange(256, 1 << 20)
        self.spin.setSingleStep(256)
        self.spin.setSuffix(" tokens")
        self.spin.editingFinished.connect(lambda: self.guarded(lambda: self.state.set_context(self.spin.value())))
        self.stops = QHBoxLayout()
        self.kv = QComboBox()
        for key, label in KV_TYPES:
            self.kv.addItem(label, key)
        self.kv.setToolTip("Type of the KV cache. A quantized V cache needs flash attention.")
        self.kv.currentIndexChanged.connect(lambda i: self.guarded(lambda: self.state.update(cache_type=self.kv.itemData(i))))
        self.fa = QCheckBox("Flash attention")
        self.fa.setToolTip("Keeps the compute buffer nearly flat in context; needed for a quantized V cache.")
        self.fa.toggled.connect(lambda on: self.guarded(lambda: self.state.update(flash_attn=on)))
        self.batch = QComboBox()
        for b in BATCHES:
            self.batch.addItem(str(b), b)
        self.batch.setToolTip("Tokens processed per step while reading the prompt (n_ubatch). Bigger = faster prompts, "
                              "bigger compute buffers on every GPU.")
        self.batch.currentIndexChanged.connect(lambda i: self.guarded(lambda: self.state.update(batch=self.batch.itemData(i))))
        self.moe = QSpinBox()
        self.moe.setToolTip("Keep the experts of the first N layers in system RAM (--moecpu / --n-cpu-moe). "
                            "Attention stays on the GPUs; frees VRAM at some speed cost.")
        self.moe.valueChanged.connect(lambda v: self.guarded(lambda: self.state.update(moecpu=v)))
        self.cost = QLabel()
        self.cost.setStyleSheet("font-size: 15pt;")
        self.cost.setWordWrap(True)
        self.note = banner(kind="warn")
        row = QHBoxLayout()
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        form = QFormLayout()
        form.addRow("Context:", row)
        form.addRow("", self.stops)
        form.addRow("KV cache type:", self.kv)
        form.addRow("", self.fa)
        form.addRow("Batch size:", self.batch)
        self.moe_label = QLabel("MoE experts in RAM:")
        form.addRow(self.moe_label, self.moe)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.note)
        lay.addWidget(self.cost)
        lay.addStretch(1)
        self._stop_buttons = []

    def _rebuild_stops(self, limit: int) -> None:
        from PySide6.QtWidgets import QPushButton

        for b in self._stop_buttons:
            b.deleteLater()
        self._stop_buttons = []
        for s in STOPS:
            if s > limit:
                break
            b = QPushButton(f"{s // 1024}k")
            b.setFlat(True)
            b.setToolTip(f"{s:,} tokens")
            b.clicked.connect(lambda _=False, s=s: self.state.set_context(s))
            self.stops.addWidget(b)
            self._stop_buttons.append(b)
        self.stops.addStretch(1)

    def refresh(self) -> None:
        st = self.state
        self._updating = True
        limit = st.model.n_ctx_train if st.model and st.model.n_ctx_train else 131072
        moe = bool(st.model and st.model.is_moe)
        with quiet(self.slider, self.spin, self.kv, self.fa, self.batch, self.moe):
            if self.slider.maximum() != max(1, limit // 256):
                self.slider.setRange(1, max(1, limit // 256))
                self.spin.setRange(256, max(256, limit // 256 * 256))
                self._rebuild_stops(limit)
            self.slider.setValue(st.context // 256)
            self.spin.setValue(st.context)
            self.kv.setCurrentIndex(max(0, self.kv.findData(st.cache_type)))
            self.fa.setChecked(st.flash_attn)
            self.batch.setCurrentIndex(max(0, self.batch.findData(st.batch)))
            self.moe.setVisible(moe)
            self.moe_label.setVisible(moe)
            if moe:
                self.moe.setRange(0, st.model.n_layer)
                self.moe.setValue(st.moecpu)
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
        self._updating = False
