"""Draw Phoenix's icon with Qt and write phoenix_gui/data/icons/phoenix.png and phoenix.ico (PNG-in-ICO).

    QT_QPA_PLATFORM=offscreen python installer/make_icon.py
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPointF, QRectF, Qt  # noqa: E402
from PySide6.QtGui import QColor, QGuiApplication, QImage, QLinearGradient, QPainter, QPainterPath  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "phoenix_gui" / "data" / "icons"


def draw(size: int) -> QImage:
    img = QImage(size, size, QImage.Format_ARGB32)
    img.fill(Qt.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.Antialiasing)
    s = size / 256.0
    bg = QLinearGradient(0, 0, 0, size)
    bg.setColorAt(0, QColor("#2b1d3f"))
    bg.setColorAt(1, QColor("#120c1c"))
    p.setPen(Qt.NoPen)
    p.setBrush(bg)
    p.drawRoundedRect(QRectF(8 * s, 8 * s, 240 * s, 240 * s), 48 * s, 48 * s)
    flame = QPainterPath(QPointF(128 * s, 30 * s))
    flame.cubicTo(QPointF(200 * s, 90 * s), QPointF(215 * s, 150 * s), QPointF(180 * s, 196 * s))
    flame.cubicTo(QPointF(160 * s, 224 * s), QPointF(96 * s, 224 * s), QPointF(76 * s, 196 * s))
    flame.cubicTo(QPointF(44 * s, 150 * s), QPointF(70 * s, 110 * s), QPointF(100 * s, 92 * s))
    flame.cubicTo(QPointF(98 * s, 120 * s), QPointF(110 * s, 140 * s), QPointF(126 * s, 146 * s))
    flame.cubicTo(QPointF(120 * s, 110 * s), QPointF(128 * s, 70 * s), QPointF(128 * s, 30 * s))
    g = QLinearGradient(0, 30 * s, 0, 224 * s)
    g.setColorAt(0, QColor("#ffd24a"))
    g.setColorAt(0.55, QColor("#ff7a1a"))
    g.setColorAt(1, QColor("#d62728"))
    p.setBrush(g)
    p.drawPath(flame)
    # three bars: the mismatched GPUs
    for i, (h, c) in enumerate(((34, "#4C78A8"), (56, "#54A24B"), (44, "#F58518"))):
        p.setBrush(QColor(c))
        p.drawRoundedRect(QRectF((92 + i * 26) * s, (210 - h) * s, 18 * s, h * s), 3 * s, 3 * s)
    p.end()
    return img


def png_bytes(img: QImage) -> bytes:
    ba = QByteArray()
    buf = QBuffer(ba)
    buf.open(QIODevice.WriteOnly)
    img.save(buf, "PNG")
    return bytes(ba)


def main() -> int:
    QGuiApplication(sys.argv[:1])
    OUT.mkdir(parents=True, exist_ok=True)
    draw(256).save(str(OUT / "phoenix.png"))
    sizes = [16, 24, 32, 48, 64, 128, 256]
    blobs = [png_bytes(draw(n)) for n in sizes]
    head = struct.pack("<HHH", 0, 1, len(sizes))
    offset = 6 + 16 * len(sizes)
    entries = b""
    for n, b in zip(sizes, blobs):
        entries += struct.pack("<BBBBHHII", n % 256, n % 256, 0, 0, 1, 32, len(b), offset)
        offset += len(b)
    (OUT / "phoenix.ico").write_bytes(head + entries + b"".join(blobs))
    print(f"wrote {OUT / 'phoenix.png'} and {OUT / 'phoenix.ico'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
