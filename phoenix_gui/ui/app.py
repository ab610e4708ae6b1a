"""Start the wizard (or render one page to a PNG for the README and for looking at it)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import UserSettings, load_settings
from ..hardware import RigFileError, demo_rig_path, detect_rig, load_rig
from ..model import ModelFileError, load_preset, preset_model_info, read_model
from ..session import WizardState

DEMO_PRESET = "qwen2.5-32b-instruct-q4_k_m"


def build_state(demo: bool, rig_path: str | None, model_path: str | None, us: UserSettings, measure: bool = True):
    notes = []
    rig = None
    # Only an explicit --rig FILE or --demo opens a rig file. A rig remembered from an earlier run
    # (us.rig_path) is never reopened: after one --demo, plain `phoenix` would otherwise show the
    # simulated cards as "the GPUs Phoenix found" on every start.
    path = rig_path or (str(demo_rig_path()) if demo else None)
    if path:
        try:
            rig = load_rig(path)
        except RigFileError as e:
            notes.append(str(e))
    if rig is None:
        rig = detect_rig(measure_bandwidth=False)  # the bandwidth is measured on a worker thread
    state = WizardState(rig)
    state.rig_path = path if rig.simulated else None
    if not demo:
        state.apply_user_settings(us)
    model_path = model_path or (None if demo else us.model_path)
    if model_path:
        try:
            state.set_model(read_model(model_path), model_path)
        except ModelFileError as e:
            state.set_model(None, model_path, str(e))
    elif demo or us.preset:
        p = load_preset(us.preset or DEMO_PRESET) if not demo else load_preset(DEMO_PRESET)
        state.set_model(preset_model_info(p), None)
    return state, " ".join(notes)


def _apply_theme(app) -> None:
    """Follow the OS light/dark scheme with the Fusion style (looks the same on every platform)."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QPalette

    app.setStyle("Fusion")
    try:
        dark = app.styleHints().colorScheme() == Qt.ColorScheme.Dark
    except AttributeError:
        dark = False
    if dark:
        pal = QPalette()
        for role, colour in ((QPalette.Window, "#202124"), (QPalette.WindowText, "#e8eaed"), (QPalette.Base, "#171717"),
                             (QPalette.AlternateBase, "#2a2a2a"), (QPalette.Text, "#e8eaed"), (QPalette.Button, "#2d2e31"),
                             (QPalette.ButtonText, "#e8eaed"), (QPalette.Highlight, "#3b82f6"),
                             (QPalette.ToolTipBase, "#2d2e31"), (QPalette.ToolTipText, "#e8eaed")):
            pal.setColor(role, QColor(colour))
        app.setPalette(pal)


def make_app(handle_errors: bool = True):
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Phoenix")
    if handle_errors:
        install_error_handler(app)
    _apply_theme(app)
    try:
        from PySide6.QtGui import QIcon

        from ..resources import resource

        app.setWindowIcon(QIcon(str(resource("icons", "phoenix.png"))))
    except Exception:  # noqa: BLE001 - an icon is not worth failing over
        pass
    return app


# --- the last-resort handler: no exception in a Qt slot or a worker thread ends the app ---

ERROR_LOG = "errors.log"
_ERROR_LOG_MAX = 1 << 20  # then rotated once to errors.log.1
_handler = None  # the installed relay (kept alive here)


def install_error_handler(app) -> None:
    """sys.excepthook and threading.excepthook -> one sentence on the current page's error banner
    (or a non-modal message when no wizard page is shown), the traceback to the data folder's
    errors.log; the event loop keeps running. PySide6 hands an exception raised in a slot to
    sys.excepthook and carries on, so this is where the user is told instead of a dead window."""
    global _handler
    if _handler is not None:
        return
    from PySide6.QtCore import QObject, Qt, Signal

    class Relay(QObject):
        raised = Signal(object, object, object)  # queued to the GUI thread from any thread

    relay = Relay()
    relay.moveToThread(app.thread())
    relay.raised.connect(_report, Qt.QueuedConnection)
    previous = sys.excepthook

    def hook(t, e, tb):
        if issubclass(t, KeyboardInterrupt):
            return previous(t, e, tb)
        try:
            relay.raised.emit(t, e, tb)
        except RuntimeError:  # the relay is gone (app shutting down): the log still gets it
            log_error(t, e, tb)

    import threading

    sys.excepthook = hook
    threading.excepthook = lambda a: hook(a.exc_type, a.exc_value, a.exc_traceback)
    _handler = (relay, hook)


def error_sentence(e: BaseException, log: Path | None) -> str:
    from ..validate import InputError

    if isinstance(e, (InputError, ModelFileError)):
        return str(e)
    where = f" (details in {log})" if log else ""
    msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    return f"Something went wrong ({type(e).__name__}: {msg}); the wizard is still usable{where}."


def log_error(t, e, tb) -> Path | None:
    """Append the traceback to the data folder's errors.log (rotated at 1 MiB); None if it cannot."""
    import time
    import traceback

    from ..storage import data_dir

    try:
        log = data_dir() / ERROR_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        if log.exists() and log.stat().st_size > _ERROR_LOG_MAX:
            log.replace(log.with_name(ERROR_LOG + ".1"))
        with open(log, "a", encoding="utf-8", errors="replace") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}\n{''.join(traceback.format_exception(t, e, tb))}")
        return log
    except OSError:
        return None


def _report(t, e, tb) -> None:
    try:
        sentence = error_sentence(e, log_error(t, e, tb))
        show_error(sentence)
    except Exception:  # noqa: BLE001 - the handler itself must never raise into Qt
        import traceback

        traceback.print_exception(t, e, tb)


def show_error(sentence: str) -> None:
    """On the shown wizard page's error banner, else in a non-modal message box."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication, QLabel, QMessageBox, QWizard

    app = QApplication.instance()
    wizards = [w for w in app.topLevelWidgets() if isinstance(w, QWizard) and w.isVisible()]
    if not wizards:
        print(f"phoenix: {sentence}", file=sys.stderr)
        return
    label = getattr(wizards[0].currentPage(), "error", None)
    if isinstance(label, QLabel):
        label.setText(sentence)
        label.setVisible(True)
        return
    box = QMessageBox(QMessageBox.Warning, "Phoenix", sentence, QMessageBox.Ok, wizards[0])
    box.setModal(False)
    box.setAttribute(Qt.WA_DeleteOnClose)
    box.show()


def make_wizard(demo: bool = False, rig_path: str | None = None, model_path: str | None = None, persist: bool = True,
                measure: bool = True):
    from .wizard import PhoenixWizard
    from .worker import run_in_thread

    us, notice = load_settings() if persist else (UserSettings(), "")
    state, note2 = build_state(demo, rig_path, model_path, us)
    w = PhoenixWizard(state, us, persist=persist, notice=" ".join(x for x in (notice, note2) if x))
    if measure and not state.rig.simulated:
        from ..hardware.system import detect_system

        run_in_thread(lambda: detect_system(measure=True), state.set_system, lambda e: None)
    return w


def screenshot(page: str, out: str, demo: bool, rig_path=None, model_path=None, size=(1280, 860)) -> Path:

    app = make_app(handle_errors=False)  # a rendering tool: an error should fail it loudly
    w = make_wizard(demo, rig_path, model_path, persist=False, measure=False)
    w.resize(*size)
    w.show()
    if page in ("split", "launch") and w.state.model is not None:  # the state after the user clicks Auto-fit
        w.state.run_auto_fit("fastest")
    if page == "monitor" and w.state.model_path:
        _run_for_screenshot(app, w)
    w.go_to(page)
    for _ in range(5):
        app.processEvents()
    out_p = Path(out)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    if not w.grab().save(str(out_p)):
        raise OSError(f"could not write {out}")
    w.close()  # stops a server the monitor screenshot started
    return out_p


def _run_for_screenshot(app, w, seconds: float = 6.0) -> None:
    """Launch the model (llama-server when it is installed), benchmark it and sample a few seconds,
    so the monitor page shows real graphs."""
    import time

    from ..backends.processes.ports import free_port
    from ..engines import engine_named

    st = w.state
    exe = engine_named("llama-server").find()
    if exe:
        st.set_backend("llama-server", exe)
        st.set_port(free_port())
        st.set_context(min(st.context, 4096))
    if w.session.start() is not None:
        return
    w.go_to("monitor")
    end = time.monotonic() + 120
    while time.monotonic() < end and w.session.outcome is None and w.session.running:
        app.processEvents()
        time.sleep(0.02)
    if not (w.session.outcome and w.session.outcome.ok):
        return
    done = []
    w.session.benchmark(256, 64, done=done.append)
    end = time.monotonic() + 120
    while not done and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.05)
    w.page("monitor").update_plots()


def self_test_gui():
    """The wizard builds offscreen in demo mode, auto-fits, and produces a command line."""
    import pyqtgraph  # noqa: F401 - the graphs' library must be bundled

    from ..planner import make_plan

    make_app(handle_errors=False)  # the self-test must fail on any error, not report and carry on
    w = make_wizard(demo=True, persist=False, measure=False)
    fit = w.state.run_auto_fit("fastest")
    plan = make_plan(w.state.model, w.state.rig, fit.settings)
    if not plan.fits:
        raise RuntimeError("the demo plan does not fit")
    w.go_to("launch")
    argv = w.state.command().argv
    w.close()
    return plan, argv


def run(demo: bool = False, rig_path: str | None = None, model_path: str | None = None,
        kcpps_path: str | None = None) -> int:
    app = make_app()
    w = make_wizard(demo, rig_path, model_path)
    w.show()
    if kcpps_path:
        w.go_to("model")
        w.page("model").import_kcpps(kcpps_path)
    elif model_path:
        w.go_to("model")
    _close_on_signals(w)
    return app.exec()


def _close_on_signals(w) -> None:
    """SIGTERM / SIGHUP (a logout, `kill`) close the window as its close button would, without the
    question: settings are saved and the server is stopped cleanly. Python runs signal handlers only
    between bytecodes, so a timer keeps giving it the chance while Qt's loop waits."""
    import signal

    from PySide6.QtCore import QTimer

    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, lambda *_: QTimer.singleShot(0, w.close))
    w._signal_tick = QTimer(w)
    w._signal_tick.timeout.connect(lambda: None)
    w._signal_tick.start(200)
