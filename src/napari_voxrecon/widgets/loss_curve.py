"""A small live plot of an optimisation's loss, for the methods that fit per stack.

The ``inr`` fits and the ``diffraction`` methods report their loss with every ``Progress``
event; the Reconstruct widget feeds them here so the user sees the fit converge (or stall)
while the volume streams into its layer. Drawn with QPainter on a log scale (losses fall over
orders of magnitude), no plotting library needed.
"""

from __future__ import annotations

import math
from typing import Iterable

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossCurve(QWidget):
    """Loss against iteration; hidden until the first value arrives."""

    MARGIN = 6

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._values: list[float] = []
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setToolTip("loss of the fit, log scale")
        self.setVisible(False)

    @property
    def values(self) -> list[float]:
        return list(self._values)

    def clear(self) -> None:
        self._values.clear()
        self.setVisible(False)
        self.update()

    def extend(self, values: Iterable[float]) -> None:
        new = [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]
        if not new:
            return
        self._values.extend(new)
        self.setVisible(True)
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if not self._values:
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        w, h, m = self.width(), self.height(), self.MARGIN
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        logs = [math.log10(v) for v in self._values]
        lo, hi = min(logs), max(logs)
        span = hi - lo or 1.0
        text_h = 14
        n = len(logs)
        points = QPolygonF([QPointF(m + (w - 2 * m) * (i / max(1, n - 1)),
                                    text_h + m + (h - text_h - 2 * m) * (hi - v) / span) for i, v in enumerate(logs)])
        painter.setPen(QPen(QColor(240, 190, 60), 1.5))
        painter.drawPolyline(points)
        painter.setPen(QColor(200, 200, 200))
        painter.drawText(m, 0, w - 2 * m, text_h + 2, Qt.AlignLeft | Qt.AlignVCenter,
                         f"loss {self._values[-1]:.3g}  (iteration {n}; {10 ** lo:.2g}-{10 ** hi:.2g}, log scale)")
        painter.end()
