"""Page 1: the GPUs (include, order), RAM and CPU; simulated rigs."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QCheckBox, QFileDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QTableWidget,
                               QTableWidgetItem, QToolButton, QVBoxLayout, QWidget, QHeaderView, QAbstractItemView)

from ...hardware import RigFileError, load_rig
from ...hardware.rigfile import rigs_dir
from .base import StatePage, banner, gib

COLUMNS = ["use", "GPU", "architecture", "VRAM used / total", "bandwidth", "PCIe", "display", "order"]


class HardwarePage(StatePage):
    def __init__(self, state, wizard_window=None):
        super().__init__(state, "Hardware", "The GPUs Phoenix found. Untick a card to leave it out; the order is the "
                         "order the server numbers them in.")
        self.banner = banner(kind="warn")
        self.error = banner(kind="error")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.Stretch)
        self.system = QLabel()
        self.system.setWordWrap(True)
        self.rig_label = QLabel()
        load = QPushButton("Load simulated rig…")
        load.setToolTip("Plan for another machine described in a TOML file (resources/rigs has examples).")
        load.clicked.connect(self.load_rig_dialog)
        top = QHBoxLayout()
        top.addWidget(self.rig_label, 1)
        top.addWidget(load)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.banner)
        lay.addWidget(self.error)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.system)

    def load_rig_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a simulated rig", str(rigs_dir()), "Rig files (*.toml)")
        if path:
            self.load_rig_file(path)

    def load_rig_file(self, path: str) -> bool:
        try:
            rig = load_rig(path)
        except RigFileError as e:
            self.error.setText(str(e))
            self.error.setVisible(True)
            return False
        self.error.setVisible(False)
        self.state.set_rig(rig)
        self.state.rig_path = path
        return True

    def refresh(self) -> None:
        st = self.state
        rig = st.rig
        self._updating = True
        self.rig_label.setText(f"<b>{rig.name}</b>" + (" (simulated)" if rig.simulated else ""))
        if not rig.gpus:
            self.banner.setText(f"No NVIDIA GPU: {rig.gpu_note} Phoenix will plan for the CPU and system RAM only.")
            self.banner.setVisible(True)
        else:
            self.banner.setVisible(False)
        key = (id(rig), tuple(st.order), frozenset(st.included))
        if key == getattr(self, "_key", None):
            self._fill_system()
            self._updating = False
            return
        self._key = key
        self.table.clearContents()
        self.table.setRowCount(0)
        self.table.setRowCount(len(st.order))
        for row, gi in enumerate(st.order):
            g = rig.gpus[gi]
            box = QCheckBox()
            box.setChecked(gi in st.included)
            box.setToolTip("Use this GPU. A listed GPU always costs a CUDA context, even with no layers.")
            box.toggled.connect(lambda on, gi=gi: self.guarded(lambda: st.set_included(gi, on)))
            self.table.setCellWidget(row, 0, _centred(box))
            self.table.setItem(row, 1, _item(f"{g.short_name}", f"{g.name}\nUUID {g.uuid}\nPCI {g.pci_bus_id}"))
            self.table.setItem(row, 2, _item(f"{g.architecture} ({g.compute_capability[0]}.{g.compute_capability[1]})",
                                             "CUDA compute capability; cards older than 7.5 need a CUDA 12 build."))
            bar = QProgressBar()
            bar.setRange(0, max(1, g.total_bytes >> 20))
            bar.setValue(g.used_bytes >> 20)
            bar.setFormat(f"{gib(g.used_bytes)} / {gib(g.total_bytes)}")
            bar.setToolTip("Memory already in use by other programs (the desktop, browsers) before Phoenix starts anything.")
            self.table.setCellWidget(row, 3, bar)
            self.table.setItem(row, 4, _item(f"{g.bandwidth_gbs:.0f} GB/s", f"Memory bandwidth ({g.bandwidth_source}); "
                                             "generation speed follows it."))
            self.table.setItem(row, 5, _item(f"gen {g.pcie_gen or '?'} x{g.pcie_width or '?'}", "PCIe link"))
            self.table.setItem(row, 6, _item("drives a display" if g.display_attached else "",
                                             "A card driving a monitor keeps some memory free for the desktop."))
            self.table.setCellWidget(row, 7, self._order_buttons(gi, row))
        self.table.resizeColumnsToContents()
        self._fill_system()
        self._updating = False

    def _fill_system(self) -> None:
        s = self.state.rig.system
        self.system.setText(f"<b>RAM</b> {gib(s.ram_available_bytes)} available of {gib(s.ram_total_bytes)}, "
                            f"{s.ram_bandwidth_gbs:.0f} GB/s ({s.ram_bandwidth_source}) · <b>CPU</b> {s.cpu_name or '?'}, "
                            f"{s.physical_cores} cores / {s.logical_cores} threads")

    def _order_buttons(self, gi: int, row: int) -> QWidget:
        w = QWidget()
        h = QHBoxLayout(w)
        h.setContentsMargins(0, 0, 0, 0)
        for text, delta, tip in (("▲", -1, "Move up (earlier in the device order)"), ("▼", 1, "Move down")):
            b = QToolButton()
            b.setText(text)
            b.setToolTip(tip)
            b.setAccessibleName(f"{tip} {self.state.rig.gpus[gi].short_name}")
            b.setEnabled(0 <= row + delta < len(self.state.order))
            b.clicked.connect(lambda _=False, gi=gi, d=delta: self.state.move_gpu(gi, d))
            h.addWidget(b)
        return w


def _item(text: str, tip: str = "") -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setFlags(it.flags() & ~Qt.ItemIsEditable)
    if tip:
        it.setToolTip(tip)
    return it


def _centred(widget) -> QWidget:
    w = QWidget()
    h = QHBoxLayout(w)
    h.setContentsMargins(4, 0, 4, 0)
    h.addWidget(widget)
    h.setAlignment(Qt.AlignCenter)
    return w
