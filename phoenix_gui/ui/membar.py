"""A stacked memory bar: where every MiB of one device goes, against its capacity."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
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
STATUS_COLOUR = {"ok": "#2CA02C", "tight": "#E0A800", "oom": "#D62728"}


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
            lines.append(f"<span style='color:{STATUS_COLOUR[d.status]}'>{d.reason()}</span>")
        self.setToolTip("<br>".join(lines))
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt naming
        d = self.device
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        r = QRectF(self.rect()).adjusted(1, 1, -1, -1)
        pal = self.palette()
        p.setPen(Qt.NoPen)
        p.setBrush(pal.base())
        p.drawRoundedRect(r, 4, 4)
        if d is None or d.capacity_bytes <= 0:
            return
        scale = r.width() / max(d.capacity_bytes, d.total_bytes + (d.capacity_bytes - d.free_bytes) + d.reserve_bytes)
        x = r.left()
        used_by_others = d.capacity_bytes - d.free_bytes
        if used_by_others > 0:  # the desktop or other programs, before Phoenix starts anything
            w = used_by_others * scale
            p.setBrush(QBrush(QColor(RESERVE_COLOUR), Qt.Dense4Pattern))
            p.drawRect(QRectF(x, r.top(), w, r.height()))
            x += w
        for field, _, colour in SEGMENTS:
            w = getattr(d, field) * scale
            if w <= 0:
                continue
            p.setBrush(QColor(colour))
            p.drawRect(QRectF(x, r.top(), w, r.height()))
            x += w
        # reserve sits at the far end of the usable space: the part Phoenix keeps free
        res_w = d.reserve_bytes * scale
        res_x = r.left() + (d.capacity_bytes - d.reserve_bytes) * scale if d.kind == "gpu" else r.right() - res_w
        p.setBrush(QBrush(QColor(RESERVE_COLOUR), Qt.BDiagPattern))
        p.drawRect(QRectF(res_x, r.top(), res_w, r.height()))
        pen = QPen(QColor(STATUS_COLOUR[d.status]))
        pen.setWidth(2 if d.status == "ok" else 3)
        p.setPen(pen)
        p.setBrush(Qt.NoBrush)
        p.drawRoundedRect(r, 4, 4)
        p.end()
