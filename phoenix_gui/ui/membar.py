"""A stacked memory bar: where every MiB of one device goes, against its capacity."""

from __future__ import annotations

from PySide6.QtCore import QLineF, QRectF, QSize, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from ..planner.ledger import DevicePlan

MIB = 1 << 20
SEGMENTS = [  # (field, label, colour)
    ("weights_bytes", "weights", "#4C78A8"),
    ("kv_bytes", "KV cache", "#F58518"),
    ("compute_bytes", "compute buffer", "#54A24B"),
    ("overhead_bytes", "runtime overhead", "#B279A2"),
]
RESERVE_COLOUR = "#9D9D9D"
OTHERS_COLOUR = "#7F7F7F"
OVERFLOW_COLOUR = "#D62728"
# one colour per card state (the planner decides the state once: fits / tight / short)
STATUS_COLOUR = {"fits": "#2CA02C", "tight": "#E0A800", "short": "#D62728"}
LEGEND = [  # (swatch html, label) in the order the bar draws them
    (f"<span style='color:{OTHERS_COLOUR}'>▤</span>", "used by other programs"),
    *[(f"<span style='color:{c}'>■</span>", label) for _, label, c in SEGMENTS],
    (f"<span style='color:{RESERVE_COLOUR}'>▨</span>", "kept free (display reserve + margin)"),
    ("<b>|</b>", "capacity"),
    (f"<span style='color:{OVERFLOW_COLOUR}'>▩</span>", "past capacity (will not load)"),
]


def legend_html() -> str:
    return " &nbsp;".join(f"{sw} {label}" for sw, label in LEGEND)


def mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


class MemoryBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.device: DevicePlan | None = None
        self.setMinimumHeight(22)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(320, 24)

    def set_device(self, d: DevicePlan) -> None:
        self.device = d
        lines = [f"<b>{d.name}</b> — {d.layers} layer(s)"]
        for field, label, colour in SEGMENTS:
            lines.append(f"<span style='color:{colour}'>■</span> {label}: {mib(getattr(d, field))}")
        lines.append(f"<span style='color:{RESERVE_COLOUR}'>■</span> reserve + margin (kept free): {mib(d.reserve_bytes)}")
        lines.append(f"total {mib(d.total_bytes)} of {mib(d.usable_bytes)} usable "
                     f"({mib(d.free_bytes)} free of {mib(d.capacity_bytes)})")
        if d.scratch_bytes:
            lines.append(f"compute includes {mib(d.scratch_bytes)} to copy weights kept in RAM for big batches")
        if d.mmap_bytes:
            lines.append(f"{mib(d.mmap_bytes)} of weights are memory-mapped (page cache)")
        if d.reason():
            lines.append(f"<span style='color:{STATUS_COLOUR[d.state]}'>{d.reason()}</span>")
        self.setToolTip("<br>".join(lines))
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt naming
        d = self.device
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        r = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        p.setPen(Qt.NoPen)
        p.setBrush(self.palette().base())
        p.drawRoundedRect(r, 4, 4)
        if d is None or d.capacity_bytes <= 0:
            p.end()
            return
        used_by_others = max(0, d.capacity_bytes - d.free_bytes)
        need = used_by_others + d.total_bytes
        # a short card's bar runs past its capacity line: the overflow is what will not load
        scale = r.width() / max(d.capacity_bytes, need)
        cap_x = r.left() + d.capacity_bytes * scale
        x = r.left()
        if used_by_others > 0:  # the desktop or other programs, before Phoenix starts anything
            w = used_by_others * scale
            p.setBrush(QBrush(QColor(OTHERS_COLOUR), Qt.Dense4Pattern))
            p.drawRect(QRectF(x, r.top(), w, r.height()))
            x += w
        for field, _, colour in SEGMENTS:
            w = getattr(d, field) * scale
            if w <= 0:
                continue
            p.setBrush(QColor(colour))
            p.drawRect(QRectF(x, r.top(), w, r.height()))
            x += w
        if d.kind == "gpu":  # reserve sits at the end of the capacity: the part Phoenix keeps free
            res_w = d.reserve_bytes * scale
            p.setBrush(QBrush(QColor(RESERVE_COLOUR), Qt.BDiagPattern))
            p.drawRect(QRectF(cap_x - res_w, r.top(), res_w, r.height()))
        if x > cap_x + 0.5:
            p.setBrush(QBrush(QColor(OVERFLOW_COLOUR), Qt.DiagCrossPattern))
            p.drawRect(QRectF(cap_x, r.top(), x - cap_x, r.height()))
        pen = QPen(self.palette().windowText().color())
        pen.setWidth(2)
        p.setPen(pen)
        p.drawLine(QLineF(cap_x, r.top() - 1, cap_x, r.bottom() + 1))
        pen = QPen(QColor(STATUS_COLOUR[d.state]))
        pen.setWidth(2 if d.state == "fits" else 3)
        p.setPen(pen)
        p.setBrush(Qt.NoBrush)
        p.drawRoundedRect(r, 4, 4)
        p.end()

    def capacity_x(self) -> float:
        """Where the capacity line is drawn (tests and tooltips)."""
        d = self.device
        r = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        need = max(0, d.capacity_bytes - d.free_bytes) + d.total_bytes
        return r.left() + d.capacity_bytes * r.width() / max(d.capacity_bytes, need)
