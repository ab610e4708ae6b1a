"""Other PCs sharing their devices over RPC, and this PC's rig, in the wizard's session. A mixin of
WizardState (session/state.py): `rig` (what the planner sees) is cluster_rig(local part, nodes), their
devices first, in node order, as the engine numbers them."""

from __future__ import annotations

from ..hardware.cluster import cluster_rig
from ..hardware.rig import RemoteNode, Rig
from .devices import split_rig
from .events import DEVICES, RIG, SPLIT, SettingError


class Cluster:

    def _engine_order(self, order: list[int]) -> list[int]:
        """RPC devices first, in the rig's (= --rpc) order, then this PC's in the order given."""
        return sorted(i for i in order if self.rig.gpus[i].is_remote) + [i for i in order if not self.rig.gpus[i].is_remote]

    def add_node(self, node: RemoteNode) -> None:
        """Add a described PC (again: its new description replaces the old one, in place)."""
        if not node.address:
            raise SettingError("A PC needs an address such as 192.168.1.20:50052.")
        nodes = [node if n.address == node.address else n for n in self.nodes]
        if node.address not in {n.address for n in self.nodes}:
            nodes.append(node)
        self.set_nodes(nodes)

    def remove_node(self, address: str) -> None:
        self.unreachable.pop(address, None)
        self.saved_nodes = [a for a in self.saved_nodes if a != address]
        self.set_nodes([n for n in self.nodes if n.address != address])

    def set_unreachable(self, address: str, why: str) -> None:
        """A remembered or typed PC that did not answer: kept in the list (and the settings) with why."""
        self.saved_nodes = [a for a in self.saved_nodes if a != address]
        if why:
            self.unreachable[address] = why
        else:
            self.unreachable.pop(address, None)
        self._emit(RIG)

    def set_down(self, address: str, why: str) -> None:
        """A listed PC stopped answering (why), or answers again (""): the Hardware and Monitor pages say so."""
        if self.down.get(address, "") == why:
            return
        if why:
            self.down[address] = why
        else:
            self.down.pop(address, None)
        self._emit(RIG)

    def set_nodes(self, nodes: list[RemoteNode]) -> None:
        """The other PCs, in --rpc order. The user's ticks, shares and locks of devices still present are
        kept (devices move index when a PC comes or goes); a new PC's devices start ticked, with the share
        llama.cpp would give them (free memory)."""
        addresses = [n.address for n in nodes]
        if len(set(addresses)) != len(addresses):
            raise SettingError("The same PC is listed twice; each address once.")
        self._local.system = self.rig.system  # measured on a worker after start
        with self.grouped():
            self.nodes = list(nodes)
            for a in addresses:
                self.unreachable.pop(a, None)
            self.down = {a: why for a, why in self.down.items() if a in addresses}
            self.saved_nodes = [a for a in self.saved_nodes if a not in addresses]
            self.rig = cluster_rig(self._local, nodes) if nodes else self._local  # devices keep their state
            self.baseline = None
            self._emit(RIG, DEVICES, SPLIT)

    def set_rig(self, rig: Rig, path: str | None = None) -> None:
        """A new rig for this PC's part; the other PCs added stay (a rig file listing its own nodes
        brings those instead)."""
        local, file_nodes = split_rig(rig)
        with self.grouped():
            self._local = local
            self.nodes = file_nodes or self.nodes
            self.rig = cluster_rig(local, self.nodes) if self.nodes else local
            self.rig_path = path if rig.simulated else None
            self.order = list(range(len(self.rig.gpus)))
            self.included = set(self.order)
            self.locked = ()
            self._parked = {}
            self.reset_shares()
            self.baseline = None
            self._emit(RIG, DEVICES, SPLIT)

