"""Cooperative cancellation shared between a front end and a running job."""

from __future__ import annotations

import threading

from ..errors import JobCancelled


class CancelToken:
    """Set from any thread; the job checks it between slices (and inside long loops)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise JobCancelled("cancelled by the user")
