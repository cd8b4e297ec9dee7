"""Small helpers shared by the dock widgets."""

from __future__ import annotations

from typing import Any


def disconnect_all(connections: list[tuple[Any, Any]]) -> None:
    """Disconnect every (emitter, callback) pair; pairs whose layer is already gone are skipped."""
    for emitter, callback in connections:
        try:
            emitter.disconnect(callback)
        except Exception:  # already gone with its layer
            pass
    connections.clear()
