"""The hardware page's "other PCs" box: add a PC that shares its devices over llama.cpp's RPC backend
(described and its link measured on a worker), list the PCs with their link, remove one."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout

from .. import validate as v
from ..engines import engine_named
from ..hardware.cluster import check_cluster
from ..hardware.rig import LinkInfo, RemoteNode
from ..session import RIG
from .worker import OwnedTask

ADD = "Add a PC"
TIMEOUT_S = 5.0
HEALTH_EVERY_S = 5.0  # each listed PC's RPC port is tried this often: a PC that died is shown down
HEALTH_TIMEOUT_S = 2.0


def link_text(link: LinkInfo | None) -> str:
    if link is None:
        return "link not measured"
    how = "measured" if link.measured else "not measured"  # typed in a rig file, or assumed without a share endpoint
    rtt = f"{link.rtt_ms:.2f}" if link.rtt_ms < 1 else f"{link.rtt_ms:.1f}"  # a LAN's is a fraction of a ms
    return f"link {rtt} ms round trip, {link.throughput_mbs:,.0f} MB/s ({how})"


def node_text(node: RemoteNode) -> str:
    n = len(node.devices)
    engine = f" · {node.engine}" if node.engine else ""
    return f"{node.label} · {n} device{'s' if n != 1 else ''} · {link_text(node.link)}{engine}"


def failure_sentence(address: str, error: BaseException) -> str:
    """describe_node's own sentence names the PC; anything else becomes one that does."""
    if isinstance(error, v.InputError):
        return str(error)
    what = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
    return f"The PC at {address} could not be asked for its devices ({what})."


def describe(address: str, engine_exe: str | None) -> tuple[RemoteNode, str]:
    """(the node, a note or ""). With this PC's engine known, its RPC protocol is checked against the
    node's now, before anything is planned on it: a mismatch is refused in one sentence (NodeError)."""
    from ..backends.nodes import describe_node  # the network side; imported where it is used
    from ..backends.protocols import check_version

    node = describe_node(address, timeout=TIMEOUT_S, measure=True)
    note = check_version(node, engine_exe) if engine_exe else None
    return node, note or ""


def banner(text: str = "", kind: str = "info"):
    """The pages' banner (imported here: the pages package imports this panel)."""
    from .pages.base import banner as make

    return make(text, kind)


class NodesPanel(QGroupBox):
    def __init__(self, state, parent=None):
        super().__init__("Other PCs sharing their devices (llama.cpp RPC)", parent)
        self.state = state
        self._task = OwnedTask(self)
        self.address = QLineEdit()
        self.address.setPlaceholderText("address:port of a PC running “Share this PC's GPUs”, e.g. 192.168.1.20:50052")
        self.address.setAccessibleName("address of the PC to add")
        self.address.returnPressed.connect(self.add_typed)
        self.add = QPushButton(ADD)
        self.add.setToolTip("Ask that PC for its devices and measure the network to it; its devices come first in "
                            "the engine's order.")
        self.add.clicked.connect(self.add_typed)
        self.error = banner(kind="error")
        self.note = banner(kind="info")  # e.g. the engine's RPC protocol could not be told
        self.rows = QGridLayout()
        self.rows.setColumnStretch(0, 1)
        top = QHBoxLayout()
        top.addWidget(self.address, 1)
        top.addWidget(self.add)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.error)
        lay.addWidget(self.note)
        lay.addLayout(self.rows)
        self._shown_key = None
        self._health = OwnedTask(self)
        self.health = QTimer(self)
        self.health.setInterval(int(HEALTH_EVERY_S * 1000))
        self.health.timeout.connect(self.check_health)
        self.health.start()
        state.on(RIG, lambda _t: self.refresh())
        self.refresh()
        if state.saved_nodes:  # remembered from the last run: asked again, they may have changed or gone
            self._describe(list(state.saved_nodes), typed=False)

    # --- actions ---
    def add_typed(self) -> None:
        text = self.address.text().strip()
        try:
            addresses = v.rpc_targets(text)
        except v.InputError as e:
            self.say(str(e))
            return
        self._describe(addresses, typed=True)

    def check_health(self) -> None:
        """Try each listed PC's RPC port on a worker; one that stopped answering is marked down (and back up when
        it answers again)."""
        addresses = [n.address for n in self.state.nodes]
        if not addresses or self._health.running:
            return
        from ..backends.nodes import node_answers

        def work(_cancel):
            return {a: node_answers(a, HEALTH_TIMEOUT_S) for a in addresses}

        def done(got):
            listed = {n.address for n in self.state.nodes}
            with self.state.grouped():
                for a, why in got.items():
                    if a in listed:
                        self.state.set_down(a, why)

        self._health.run(work, done, lambda _e: None)

    def retry(self, address: str) -> None:
        self._describe([address], typed=False)

    def remove(self, address: str) -> None:
        self.state.remove_node(address)

    def _describe(self, addresses: list[str], typed: bool) -> None:
        """Each PC is asked in turn on the worker; the answers come back together (one job at a time)."""
        self.say("")
        self._busy(f"Asking {', '.join(addresses)}…")
        st = self.state
        exe = st.executable if engine_named(st.backend).rpc_host else None  # llama-server cannot be asked (no host mode)

        def work(cancel):
            out = []
            for a in addresses:
                if cancel.is_set():
                    break
                try:
                    node, note = describe(a, exe)
                    out.append((a, node, note))
                except Exception as e:  # noqa: BLE001 - each failure becomes one sentence naming the PC
                    out.append((a, None, failure_sentence(a, e)))
            return out

        self._task.run(work, lambda res: self._described(res, typed), self._failed)

    def _described(self, results, typed: bool) -> None:
        self._busy("")
        failures, notes = [], []
        with self.state.grouped():
            for address, node, why in results:
                if node is not None:
                    node, why = self._fits(node, why)
                if node is not None:
                    self.state.add_node(node)
                    if why:
                        notes.append(why)
                elif typed:  # a typo is not remembered: the address stays in the box to be corrected
                    failures.append(why)
                else:  # a remembered PC: its row says why, with Try again
                    self.state.set_unreachable(address, why)
        if typed and not failures:
            self.address.clear()
        self.say(" ".join(failures))
        self.note.setText(" ".join(notes))
        self.note.setVisible(bool(notes))

    def _fits(self, node: RemoteNode, note: str) -> tuple[RemoteNode | None, str]:
        """(node, note), or (None, why) when it cannot join the PCs already listed: the same PC again under
        another name, one of this PC's own GPUs, or more devices than llama.cpp uses."""
        rig = self.state.rig
        others = [n for n in self.state.nodes if n.address != node.address]  # asked again: replaces itself
        try:
            check_cluster([g for g in rig.gpus if not g.is_remote], others + [node])
        except v.InputError as e:
            return None, str(e)
        return node, note

    def _failed(self, error: BaseException) -> None:
        self._busy("")
        self.say(failure_sentence(self.address.text().strip() or "?", error))

    def _busy(self, text: str) -> None:
        self.add.setEnabled(not text)
        self.add.setText(text or ADD)

    def say(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))

    # --- drawing ---
    def refresh(self) -> None:
        st = self.state
        key = ([(n.address, node_text(n), st.down.get(n.address, "")) for n in st.nodes], sorted(st.unreachable.items()))
        if key == self._shown_key:
            return
        self._shown_key = key
        while self.rows.count():
            w = self.rows.takeAt(0).widget()
            if w:
                w.deleteLater()
        r = 0
        for n in st.nodes:
            down = st.down.get(n.address)
            self._row(r, node_text(n) + (f" · DOWN: {down}" if down else ""), n.address, retry=False, down=bool(down))
            r += 1
        for address, why in st.unreachable.items():
            self._row(r, why, address, retry=True)  # the sentence names the PC
            r += 1

    def _row(self, r: int, text: str, address: str, retry: bool, down: bool = False) -> None:
        label = QLabel(text)
        if down:
            label.setStyleSheet("color: #c0392b;")
        label.setTextFormat(Qt.PlainText)  # names come from other PCs
        label.setWordWrap(True)
        self.rows.addWidget(label, r, 0)
        if retry:
            again = QPushButton("Try again")
            again.setAccessibleName(f"Try {address} again")
            again.clicked.connect(lambda _=False, a=address: self.retry(a))
            self.rows.addWidget(again, r, 1)
        remove = QPushButton("Remove")
        remove.setAccessibleName(f"Remove {address}")
        remove.setToolTip("Plan without this PC (it keeps sharing until it is stopped there).")
        remove.clicked.connect(lambda _=False, a=address: self.remove(a))
        self.rows.addWidget(remove, r, 2)
