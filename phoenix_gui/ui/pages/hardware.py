"""Page 1: the GPUs (include, order), RAM and CPU; simulated rigs and the way back to this PC."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                               QPushButton, QTableWidget, QTableWidgetItem, QToolButton, QVBoxLayout, QWidget)

from ...hardware import RigFileError, detect_rig, load_rig
from ...hardware.cluster import link_of, machine_of, nodes_of
from ...hardware.rigfile import rigs_dir
from ..nodes_panel import NodesPanel, link_text
from ..share_panel import SharePanel
from ...session import DEVICES, RIG
from ..worker import OwnedTask
from .base import StatePage, banner, gib, quiet

COLUMNS = ["use", "PC", "GPU", "architecture", "VRAM used / total", "bandwidth", "PCIe", "display", "order"]
USE, PC, NAME, ARCH, VRAM, BANDWIDTH, PCIE, DISPLAY, ORDER = range(len(COLUMNS))

INSTRUCTIONS = ("Tick the cards to use (Space ticks the focused row); ▲/▼ set the order the server numbers "
                "them in. Every ticked card costs a CUDA context, even with no layers.")
THIS_PC = "The GPUs Phoenix found in this PC"
USE_THIS_PC = "Use this PC's hardware"
SHARE = "Share this PC's GPUs…"


def heading_text(rig, rig_path: str | None) -> str:
    """Says whose GPUs these are: a simulated rig must never read as this PC's. Other PCs are named with their
    address (two PCs may both be called "vm": "(vm + vm)" told the user nothing)."""
    nodes = nodes_of(rig)
    name = (rig.local_name or rig.name) if nodes else rig.name
    others = (" and " + ", ".join(f"{n.name} ({n.address})" if n.name != n.address else n.address for n in nodes)
              if nodes else "")
    if not rig.simulated:
        return (f"{THIS_PC} ({name})" if name else THIS_PC) + others
    return f"Simulated rig: {name}" + (f" (from {Path(rig_path).name})" if rig_path else "") + others


def no_gpu_text(rig) -> str:
    """One sentence for a rig without NVIDIA GPUs. The rig's gpu_note already says "no GPU" (and
    sometimes "so Phoenix plans for the CPU only"), so only its reason is kept."""
    if rig.simulated:
        return f"No NVIDIA GPU in the simulated rig “{rig.name}”, so Phoenix plans for the CPU and system RAM only."
    why = (rig.gpu_note or "").strip().rstrip(".").split(", so Phoenix")[0]
    first = why.split(" ")[0]
    if first and not first.isupper() and first != "Phoenix":  # "The driver…" -> "the driver…", "NVIDIA…" stays
        why = why[0].lower() + why[1:]
    because = f" because {why}" if why else ""
    return f"No NVIDIA GPU was found in this PC{because}, so Phoenix plans for the CPU and system RAM only."


def short_pci(bus_id: str) -> str:
    """NVML's "00000000:02:00.0" as lspci and Device Manager write it: "0000:02:00.0"."""
    domain, sep, rest = bus_id.partition(":")
    if sep and len(domain) == 8 and domain.startswith("0000"):
        return f"{domain[4:]}:{rest}".lower()
    return bus_id.lower()


class GpuTable(QTableWidget):
    """Space (or Select) anywhere on the focused row ticks or unticks that row's GPU: the tick box
    itself is one small cell, and keyboard users land on whichever cell they tabbed into."""

    def keyPressEvent(self, e) -> None:  # noqa: N802
        row = self.currentRow()
        if e.key() in (Qt.Key_Space, Qt.Key_Select) and row >= 0 and self.item(row, USE) is not None:
            it = self.item(row, USE)
            it.setCheckState(Qt.Unchecked if it.checkState() == Qt.Checked else Qt.Checked)
            e.accept()
            return
        super().keyPressEvent(e)


class HardwarePage(StatePage):
    topics = (RIG, DEVICES)

    def __init__(self, state, wizard_window=None):
        super().__init__(state, "Hardware", INSTRUCTIONS)
        self._detect = OwnedTask(self)
        self._built_for = None  # the rig the table's rows were made for; rows are rebuilt only for a new rig
        self._notice = ""  # a start-up notice (damaged settings, unreadable rig file) shown above the table
        self.heading = QLabel()
        font = QFont(self.heading.font())
        font.setBold(True)
        self.heading.setFont(font)
        self.heading.setTextFormat(Qt.PlainText)  # rig names come from files
        self.heading.setWordWrap(True)
        self.this_pc = QPushButton(USE_THIS_PC)
        self.this_pc.setToolTip("Plan for the GPUs in this computer instead of a simulated rig.")
        self.this_pc.clicked.connect(self.use_this_pc)
        self.load_button = QPushButton("Load simulated rig…")
        self.load_button.setToolTip("Plan for another machine described in a TOML file (phoenix_gui/data/rigs has examples).")
        self.load_button.clicked.connect(self.load_rig_dialog)
        self.share_button = QPushButton(SHARE)
        self.share_button.setToolTip("Let another PC running Phoenix use this PC's devices over the network "
                                     "(llama.cpp's RPC host).")
        self.share_button.clicked.connect(self.show_share)
        self.share: SharePanel | None = None  # made on first use
        self.banner = banner(kind="warn")
        self.error = banner(kind="error")
        self.table = GpuTable(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        # One highlighted row shows which GPU Space and the arrow keys act on.
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setStyleSheet("QTableView::item { padding: 3px 8px; }")  # two-line cells need air to be read
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(QHeaderView.ResizeToContents)
        head.setSectionResizeMode(VRAM, QHeaderView.Stretch)
        self.table.itemChanged.connect(self._item_changed)
        self.system = QLabel()
        self.system.setWordWrap(True)
        self.nodes = NodesPanel(state, self)
        self._rows: list[tuple[QProgressBar, QToolButton, QToolButton]] = []
        top = QHBoxLayout()
        top.addWidget(self.heading, 1)
        top.addWidget(self.this_pc)
        top.addWidget(self.load_button)
        top.addWidget(self.share_button)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.banner)
        lay.addWidget(self.error)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.nodes)
        lay.addWidget(self.system)
        self._filler = QWidget()  # takes the table's room when there is no GPU, so the text stays on top
        lay.addWidget(self._filler, 1)

    # --- choosing the rig ---
    def load_rig_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a simulated rig", str(rigs_dir()), "Rig files (*.toml)")
        if path:
            self.load_rig_file(path)

    def load_rig_file(self, path: str) -> bool:
        try:
            rig = load_rig(path)
        except RigFileError as e:
            self._show_error(str(e))
            return False
        self._show_error("")
        self.state.set_rig(rig, path)
        return True

    def use_this_pc(self) -> None:
        """Detect this PC's GPUs on a worker: NVML can take seconds to answer (or to time out)."""
        self.this_pc.setEnabled(False)
        self.this_pc.setText("Detecting this PC's hardware…")
        self._detect.run(lambda _cancel: detect_rig(measure_bandwidth=False), self._detected, self._detect_failed)

    # --- this PC as a node of another ---
    def show_share(self) -> SharePanel:
        if self.share is None:
            self.share = SharePanel(self.state, self)
            self.share.changed.connect(self._share_changed)
        self.share.watch(self.window())  # closing the wizard stops the sharing
        self.share.show()
        self.share.raise_()
        return self.share

    def _share_changed(self) -> None:
        host = self.share.host if self.share else None
        sharing = self.share is not None and self.share.sharing
        self.share_button.setText(f"Sharing on {host.address}…" if host else "Sharing…" if sharing else SHARE)

    def _detected(self, rig) -> None:
        self._show_error("")
        self.this_pc.setText(USE_THIS_PC)
        self.state.set_rig(rig)
        self._show_buttons()

    def _detect_failed(self, error: BaseException) -> None:
        self.this_pc.setText(USE_THIS_PC)
        self._show_error(f"Detecting this PC's hardware failed ({error or type(error).__name__}).")
        self._show_buttons()

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    def _show_buttons(self) -> None:
        self.this_pc.setEnabled(self.state.rig.simulated and not self._detect.running)

    def show_notice(self, text: str) -> None:
        """A start-up message (damaged settings file, a rig file that did not load)."""
        self._notice = text
        self._show_banner()

    def _show_banner(self) -> None:
        rig = self.state.rig
        parts = [p for p in (self._notice, "" if rig.gpus else no_gpu_text(rig)) if p]
        self.banner.setText(" ".join(parts))
        self.banner.setVisible(bool(parts))

    # --- drawing ---
    def refresh(self) -> None:
        st = self.state
        self.heading.setText(heading_text(st.rig, st.rig_path))
        self.heading.setToolTip(st.rig_path or "")
        self._show_buttons()
        self._show_banner()
        self.table.setVisible(bool(st.rig.gpus))
        self._filler.setVisible(not st.rig.gpus)
        self.table.setColumnHidden(PC, not any(g.is_remote for g in st.rig.gpus))  # one PC: no column to read
        self._updating = True
        try:
            with quiet(self.table):
                new_rig = self._built_for is not st.rig or len(self._rows) != len(st.order)
                if new_rig:
                    self._build_rows()
                for row, gi in enumerate(st.order):
                    self._fill_row(row, gi)
                if new_rig:
                    self.table.resizeRowsToContents()  # the GPU cells have two lines
        finally:
            self._updating = False
        self._fill_system()

    def _build_rows(self) -> None:
        """The rows' items and widgets, made once per rig; order and ticks only change their contents
        (so focus, the current row and the scroll position survive a tick or a move)."""
        st = self.state
        n = len(st.order)
        self._built_for = st.rig
        self.table.clearContents()
        self.table.setRowCount(n)
        self._rows = []
        for row in range(n):
            use = QTableWidgetItem()
            use.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable | Qt.ItemIsUserCheckable)
            use.setToolTip("Use this GPU (Space on the row ticks or unticks it). A listed GPU always costs a "
                           "CUDA context, even with no layers.")
            self.table.setItem(row, USE, use)
            for col in range(PC, ORDER):
                if col != VRAM:
                    self.table.setItem(row, col, _item())
            bar = QProgressBar()
            bar.setToolTip("Memory already in use by other programs (the desktop, browsers) before Phoenix "
                           "starts anything.")
            self.table.setCellWidget(row, VRAM, bar)
            up, down, buttons = self._order_buttons(row, n)
            self.table.setCellWidget(row, ORDER, buttons)
            self._rows.append((bar, up, down))

    def _fill_row(self, row: int, gi: int) -> None:
        st = self.state
        g = st.rig.gpus[gi]
        label = st.gpu_label(gi)
        use = self.table.item(row, USE)
        use.setCheckState(Qt.Checked if gi in st.included else Qt.Unchecked)
        use.setData(Qt.AccessibleTextRole, f"Use {label}")
        # A left-out card's row is greyed, so the tick's effect is visible across the row.
        grey = None if gi in st.included else self.palette().color(QPalette.Disabled, QPalette.Text)
        for col in (PC, NAME, ARCH, BANDWIDTH, PCIE, DISPLAY):
            it = self.table.item(row, col)
            if it.data(Qt.ForegroundRole) != grey:
                it.setData(Qt.ForegroundRole, grey)
        if g.is_remote and g.node in st.down:  # it stopped answering: not a healthy device until it answers again
            _set(self.table.item(row, PC), f"{machine_of(st.rig, g)}\n{g.node} · DOWN", st.down[g.node])
            _set(self.table.item(row, NAME), f"RPC{g.index} {g.short_name}\n[{g.node}]",
                 f"{g.name}\nThe engine names it RPC{g.index}[{g.node}].")
        elif g.is_remote:  # the engine numbers it RPCn, first; its PC and link say where it really is
            _set(self.table.item(row, PC), f"{machine_of(st.rig, g)}\n{g.node}",
                 f"Shared over the network by {g.node}; {link_text(link_of(st.rig, g))}.")
            _set(self.table.item(row, NAME), f"RPC{g.index} {g.short_name}\n[{g.node}]",
                 f"{g.name}\nThe engine names it RPC{g.index}[{g.node}].")
        else:
            _set(self.table.item(row, PC), "this PC", "")
            # Index and PCI bus in plain sight: two identical cards differ only there.
            _set(self.table.item(row, NAME), f"#{g.index} {g.short_name}\nPCI {short_pci(g.pci_bus_id)}",
                 f"{g.name}\nUUID {g.uuid}\nPCI {g.pci_bus_id}")
        cc = "" if g.compute_capability == (0, 0) else f" ({g.compute_capability[0]}.{g.compute_capability[1]})"
        _set(self.table.item(row, ARCH), f"{g.architecture}{cc}",
             "CUDA compute capability; cards older than 7.5 need a CUDA 12 build." if cc else "")
        bar, up, down = self._rows[row]
        bar.setRange(0, max(1, g.total_bytes >> 20))
        bar.setValue(g.used_bytes >> 20)
        bar.setFormat(f"{gib(g.used_bytes)} / {gib(g.total_bytes)}")
        _set(self.table.item(row, BANDWIDTH), f"{g.bandwidth_gbs:.0f} GB/s",
             f"Memory bandwidth ({g.bandwidth_source}); generation speed follows it.")
        if g.is_remote:  # what stands between this PC and it is the network, not a PCIe slot
            _set(self.table.item(row, PCIE), "network", link_text(link_of(st.rig, g)))
        else:
            _set(self.table.item(row, PCIE), f"gen {g.pcie_gen or '?'} x{g.pcie_width or '?'}", "PCIe link")
        _set(self.table.item(row, DISPLAY), "drives a display" if g.display_attached else "",
             "A card driving a monitor keeps some memory free for the desktop.")
        up.setAccessibleName(f"Move {label} up")
        down.setAccessibleName(f"Move {label} down")
        pos = st.order.index(gi)
        up.setEnabled(pos > 0 and self._movable(gi, -1))
        down.setEnabled(pos < len(st.order) - 1 and self._movable(gi, 1))

    def _movable(self, gi: int, delta: int) -> bool:
        """RPC devices keep the engine's place (first, in --rpc order): no arrows on them or across them."""
        st = self.state
        other = st.order[st.order.index(gi) + delta]
        return not st.rig.gpus[gi].is_remote and not st.rig.gpus[other].is_remote

    def _order_buttons(self, row: int, n: int):
        w = QWidget()
        h = QHBoxLayout(w)
        h.setContentsMargins(2, 0, 2, 0)
        made = []
        for text, delta, tip in (("▲", -1, "Move up (earlier in the device order)"), ("▼", 1, "Move down")):
            b = QToolButton()
            b.setText(text)
            b.setToolTip(tip)
            b.setEnabled(0 <= row + delta < n)
            b.clicked.connect(lambda _=False, r=row, d=delta: self._move_row(r, d))
            h.addWidget(b)
            made.append(b)
        return made[0], made[1], w

    def _move_row(self, row: int, delta: int) -> None:
        """Move the GPU shown on `row`; the current row and keyboard focus follow the card, so pressing
        ▲ again keeps moving the same GPU."""
        gi = self.state.order[row]
        button = self._rows[row][1 if delta < 0 else 2]
        had_focus = button.hasFocus()
        self.state.move_gpu(gi, delta)
        new = self.state.order.index(gi)
        self.table.setCurrentCell(new, max(0, self.table.currentColumn()))
        if had_focus:
            self._rows[new][1 if delta < 0 else 2].setFocus()

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if self._updating or item.column() != USE or item.row() >= len(self.state.order):
            return
        self.state.set_included(self.state.order[item.row()], item.checkState() == Qt.Checked)

    def _fill_system(self) -> None:
        s = self.state.rig.system
        self.system.setText(f"<b>RAM</b> {gib(s.ram_available_bytes)} available of {gib(s.ram_total_bytes)}, "
                            f"{s.ram_bandwidth_gbs:.0f} GB/s ({s.ram_bandwidth_source}) · <b>CPU</b> {s.cpu_name or '?'}, "
                            f"{s.physical_cores} cores / {s.logical_cores} threads")


def _item() -> QTableWidgetItem:
    it = QTableWidgetItem()
    it.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)  # read-only
    return it


def _set(it: QTableWidgetItem, text: str, tip: str = "") -> None:
    """Write only what changed: refresh runs on every state change the page follows."""
    if it.text() != text:
        it.setText(text)
    if it.toolTip() != tip:
        it.setToolTip(tip)
