"""Page 2: pick the model (file, drag and drop, recent, .kcpps import) and see what it is."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                               QPushButton, QVBoxLayout)

from ...backends.kcpps import KcppsError, read_kcpps
from ...model import ModelFileError, read_model
from ...session import MODEL, NOTES, SettingError
from ..worker import OwnedTask
from .base import StatePage, banner


class ModelPage(StatePage):
    topics = (MODEL, NOTES)

    def __init__(self, state, user_settings=None):
        super().__init__(state, "Model", "Choose a .gguf model from any folder, or drop one onto the window. "
                         "Opening any part of a split model reads all parts.")
        self.us = user_settings
        self.task = OwnedTask(self)  # one header read at a time: a newer choice supersedes an older one
        self.loading: str | None = None
        self.path = QLineEdit()
        self.path.setPlaceholderText("/path/to/model.gguf")
        self.path.returnPressed.connect(lambda: self.load(self.path.text().strip()))  # Enter reads the file only
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse)
        kc = QPushButton("Import .kcpps…")
        kc.setToolTip("Read a koboldcpp config: its model, context and split become the starting point, "
                      "and the split page compares against it.")
        kc.clicked.connect(self.import_dialog)
        self.advise_button = QPushButton("What fits this PC?…")
        self.advise_button.setToolTip("Every quant of this model at a context you pick, planned on this PC: "
                                      "does it fit, how fast, what it costs in quality, and which files you have.")
        self.advise_button.clicked.connect(self.open_advisor)
        self.advise_button.setEnabled(False)
        self.advisor = None
        self.recent = QComboBox()
        self.recent.setToolTip("Recently used models")
        self.recent.activated.connect(lambda i: self.load(self.recent.itemData(i)) if self.recent.itemData(i) else None)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # indeterminate while the header is read
        self.busy.setVisible(False)
        self.error = banner(kind="error")
        self.info = banner(kind="info")
        self.form = QFormLayout()
        self.fields = {}
        for key, label, tip in [
            ("name", "Model", ""), ("arch", "Architecture", "llama.cpp architecture name from the GGUF"),
            ("params", "Parameters", ""), ("quant", "Quantization", "the file type; tensors may mix types"),
            ("layers", "Layers", "repeating blocks; +1 for the output layer when offloading"),
            ("size", "Size", "bytes of tensors (exact, from the GGUF header)"),
            ("ctx", "Trained context", "the longest context the model was trained for"),
            ("kv", "KV geometry", "heads that hold the KV cache (GQA) and their widths"),
            ("moe", "Experts", "mixture of experts: total and used per token"),
            ("file", "File", "")]:
            lab = QLabel("—")
            lab.setWordWrap(True)
            if tip:
                lab.setToolTip(tip)
            self.fields[key] = lab
            self.form.addRow(label + ":", lab)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        row.addWidget(kc)
        row.addWidget(self.advise_button)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.recent)
        lay.addWidget(self.busy)
        lay.addWidget(self.error)
        lay.addWidget(self.info)
        lay.addLayout(self.form)
        lay.addStretch(1)

    def browse(self) -> None:
        start = str(Path(self.state.model_path).parent) if self.state.model_path else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model", start, "GGUF models (*.gguf);;All files (*)")
        if path:
            self.load(path)

    def open_advisor(self) -> None:
        """The 'What fits this PC?' view of this model (ui/advisor_view.py); a quant on disk picked there opens."""
        from ..advisor_view import AdvisorDialog

        if self.state.model is None:
            return
        self.advisor = AdvisorDialog(self.state, self)
        self.advisor.open_file.connect(self.load)
        self.advisor.show()

    def import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a koboldcpp config", "", "koboldcpp configs (*.kcpps *.kcppt)")
        if path:
            self.import_kcpps(path)

    def load(self, path: str, then=None) -> None:
        """Read the header on a worker thread; the window stays responsive for big files. A newer
        load supersedes an older one (its result is dropped)."""
        if not path:
            return
        self.busy.setVisible(True)
        self.error.setVisible(False)
        self.path.setText(path)
        self.loading = path
        self.completeChanged.emit()

        def done(model):
            self.loading = None
            self.busy.setVisible(False)
            self.state.set_model(model, path)
            if self.us is not None:
                self.us.remember_model(path)
            if then:
                then()
            self.completeChanged.emit()

        def failed(e):
            self.loading = None
            self.busy.setVisible(False)
            msg = str(e) if isinstance(e, ModelFileError) else f"{Path(path).name} could not be read ({type(e).__name__}: {e})."
            self.state.set_model(None, path, msg)
            self.completeChanged.emit()

        self.task.run(lambda _cancel: read_model(path), done, failed)

    def import_kcpps(self, path: str) -> None:
        try:
            imp = read_kcpps(path)
        except KcppsError as e:
            self.error.setText(str(e))
            self.error.setVisible(True)
            return
        if imp.model_path and Path(imp.model_path).exists():
            self.load(imp.model_path, then=lambda: self._apply(imp))
        elif self._apply(imp):
            if imp.model_path:
                self.state.set_notes(self.state.notes + [f"The config's model {imp.model_path} was not found; choose the file."])

    def _apply(self, imp) -> bool:
        """The config's settings onto the wizard, or its one sentence (a split longer than the GPUs)."""
        try:
            self.state.apply_kcpps(imp)
        except SettingError as e:
            self.error.setText(str(e))
            self.error.setVisible(True)
            return False
        return True

    def typed_path(self) -> str:
        return self.path.text().strip()

    def isComplete(self) -> bool:  # noqa: N802 - Next needs a model to plan, and no read under way
        return self.state.model is not None and self.loading is None

    def validatePage(self) -> bool:  # noqa: N802
        """A path typed but not yet read is read first; Next moves on only once it is the model shown."""
        typed = self.typed_path()
        if typed and self.state.model_path != typed:
            self.load(typed)
            return False
        return self.state.model is not None and not self.state.model_error

    def refresh(self) -> None:
        st = self.state
        self.completeChanged.emit()
        self.recent.clear()
        self.recent.addItem("Recent models…", None)
        for p in (self.us.recent_models if self.us else []):
            self.recent.addItem(p, p)
        if st.model_path and self.path.text() != st.model_path and not self.path.hasFocus() and self.loading is None:
            self.path.setText(st.model_path)
        self.error.setText(st.model_error)
        self.error.setVisible(bool(st.model_error))
        self.info.setText(" ".join(st.notes))
        self.info.setVisible(bool(st.notes))
        m = st.model
        f = self.fields
        self.advise_button.setEnabled(m is not None and self.loading is None)
        if m is None:
            for lab in f.values():
                lab.setText("—")
        else:
            f["name"].setText(m.name)
            f["arch"].setText(m.architecture)
            f["params"].setText(f"{m.n_params / 1e9:.2f} billion" + (f" ({m.size_label})" if m.size_label else ""))
            f["quant"].setText(m.file_type)
            f["layers"].setText(f"{m.n_layer} (+1 output layer)")
            f["size"].setText(f"{m.tensor_bytes / 1e9:.2f} GB ({m.tensor_bytes / (1 << 30):.2f} GiB)")
            f["ctx"].setText(f"{m.n_ctx_train:,} tokens" + (f"; sliding window {m.sliding_window} on {sum(m.swa_layers)} layers"
                                                            if m.sliding_window else ""))
            f["kv"].setText(f"{max(m.n_head_kv)} KV heads of {max(m.n_head)} · K {m.key_length} / V {m.value_length} wide")
            f["moe"].setText(f"{m.n_expert} experts, {m.n_expert_used} used per token" if m.is_moe else "dense (no experts)")
            f["file"].setText(", ".join(p.name for p in m.parts) if m.parts else "built-in preset (demo, no file)")
