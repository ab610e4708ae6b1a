"""Run slow work on a worker thread and call back on the GUI thread (one small helper, Anki-style)."""

from __future__ import annotations

import sys
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
            else:  # reported, never raised into Qt's event loop
                sys.excepthook(type(error), error, error.__traceback__)
        else:
            on_done(result)

    relay.finished.connect(deliver)
    QThreadPool.globalInstance().start(_Job(fn, relay))


def wait_for_workers(ms: int = 10000) -> bool:
    return QThreadPool.globalInstance().waitForDone(ms)


class OwnedTask:
    """Slow work owned by one widget, one job at a time (Anki's QueryOp, in small).

    Starting a job supersedes the one before: the earlier job's `cancel` event is set and its result
    is dropped, so two quick model loads cannot race with the last finisher winning. Nothing is
    delivered once the owner widget is gone (closing the window during a load)."""

    def __init__(self, owner):
        import threading

        self._owner = owner
        self._generation = 0
        self._cancel = threading.Event()
        self.running = False
        owner.destroyed.connect(self._owner_gone)

    def _owner_gone(self, *_):
        self._owner = None
        self.cancel()

    def cancel(self) -> None:
        """Drop the running job's result and tell it to stop where it can."""
        self._generation += 1
        self._cancel.set()
        self.running = False

    def run(self, fn: Callable[[Any], Any], on_done: Callable[[Any], None],
            on_error: Callable[[BaseException], None] | None = None) -> None:
        """fn(cancel_event) runs on the thread pool; on_done/on_error run on the GUI thread, only for
        the latest job and only while the owner exists."""
        import threading

        self.cancel()
        self._cancel = cancel = threading.Event()
        self._generation += 1
        gen = self._generation
        self.running = True

        def current() -> bool:
            return gen == self._generation and self._owner is not None and not cancel.is_set()

        def done(result):
            if current():
                self.running = False
                on_done(result)

        def failed(error):
            if current():
                self.running = False
                if on_error:
                    on_error(error)

        run_in_thread(lambda: fn(cancel), done, failed)
