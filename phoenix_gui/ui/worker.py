"""Run slow work on a worker thread and call back on the GUI thread (one small helper, Anki-style)."""

from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot


class _Relay(QObject):
    finished = Signal(object, object)  # result, exception


class _Job(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay):
        super().__init__()
        self.fn, self.relay = fn, relay
        self.setAutoDelete(True)

    def run(self) -> None:  # worker thread
        try:
            result, error = self.fn(), None
        except BaseException as e:  # noqa: BLE001 - handed to the GUI thread, which decides
            result, error = None, e
        self.relay.finished.emit(result, error)


_alive: set[_Relay] = set()  # relays must outlive their jobs


def run_in_thread(fn: Callable[[], Any], on_done: Callable[[Any], None],
                  on_error: Callable[[BaseException], None] | None = None) -> None:
    """fn runs on the thread pool; on_done(result) or on_error(exc) runs later on the GUI thread."""
    relay = _Relay()
    _alive.add(relay)

    @Slot(object, object)
    def deliver(result, error):
        _alive.discard(relay)
        if error is not None:
            if on_error:
                on_error(error)
            else:
                raise error
        else:
            on_done(result)

    relay.finished.connect(deliver)
    QThreadPool.globalInstance().start(_Job(fn, relay))


def wait_for_workers(ms: int = 10000) -> bool:
    return QThreadPool.globalInstance().waitForDone(ms)
