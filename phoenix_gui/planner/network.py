"""The network in a plan: devices other PCs share over llama.cpp's RPC backend cost time per token (a round
trip and the activations each run of layers on a node) and time to load (the weights sent there)."""

from __future__ import annotations

from ..hardware.cluster import ASSUMED_LINK, link_of, machine_of
from ..hardware.rig import GpuInfo, LinkInfo, Rig
from ..validate import InputError
from .ledger import DevicePlan
from .placement import CPU


def check_engine_order(rig: Rig, gpus: list[GpuInfo]) -> None:
    """The engine lists every RPC device first, node by node in --rpc order, then this PC's GPUs; a plan
    in another order would put its layers on other devices than it says (raises InputError)."""
    rank = {g.node: i for i, g in reversed(list(enumerate(rig.gpus))) if g.is_remote}
    keys = [(0, rank[g.node], rig.gpus.index(g)) if g.is_remote else (1, 0, 0) for g in gpus]
    if keys != sorted(keys):
        raise InputError("Devices of other PCs must come first, node by node in the order the PCs were added and "
                         "each PC's devices in its own order: llama.cpp places RPC devices before this PC's GPUs.")


def _link(rig: Rig, g: GpuInfo) -> LinkInfo:
    return link_of(rig, g) or ASSUMED_LINK


# Per generated token and run of layers on a node, koboldcpp 1.115.1 sends about 3.2 KB besides the
# activations (tensor headers of its set_tensor/get_tensor calls, positions, a small context's attention
# mask: 3,452 B up for a 64-wide model on loopback) and waits once, for the run's result (2 turns a token).
RPC_REQUEST_BYTES = 3200


def network_seconds(rig: Rig, gpus: list[GpuInfo], assign: list[int], n_embd: int, n_vocab: int) -> float:
    """Network time per generated token. The token starts and ends on this PC (embeddings, sampling); each
    run of consecutive layers on one node costs a round trip (the main process waits for the node's
    result) plus what is sent there (n_embd floats and the RPC requests) and back (n_embd floats; the
    logits, n_vocab floats, when the output layer is the run's last). Moving between two devices of the
    same node costs no network. The attention mask's growth with the filled context is left out."""
    t = 0.0
    prev = ""
    for il, d in enumerate(assign):
        node = gpus[d].node if d != CPU else ""
        if node and node != prev:
            link = _link(rig, gpus[d])
            t += link.rtt_ms / 1000 + (n_embd * 4 + RPC_REQUEST_BYTES) / (link.throughput_mbs * 1e6)
        if node and (il + 1 == len(assign) or (gpus[assign[il + 1]].node if assign[il + 1] != CPU else "") != node):
            back = n_vocab if il + 1 == len(assign) else n_embd
            t += back * 4 / (_link(rig, gpus[d]).throughput_mbs * 1e6)
        prev = node
    return t


def load_time_notes(rig: Rig, gpus: list[GpuInfo], devices: list[DevicePlan]) -> list[str]:
    """Loading sends each node its weights over the network: say how long that takes."""
    sent: dict[str, int] = {}
    for g, d in zip(gpus, devices):
        if g.is_remote and d.weights_bytes:
            sent[g.node] = sent.get(g.node, 0) + d.weights_bytes
    notes = []
    for addr, nbytes in sent.items():
        g = next(x for x in gpus if x.node == addr)
        link = link_of(rig, g)
        known = link is not None
        link = link or ASSUMED_LINK
        secs = nbytes / (link.throughput_mbs * 1e6)
        how = (f"{'measured' if link.measured else 'given'} link, {link.throughput_mbs:,.0f} MB/s" if known
               else f"link not measured; assuming 1 Gbit Ethernet, {link.throughput_mbs:,.0f} MB/s")
        notes.append(f"Loading sends {nbytes / 1e9:,.1f} GB of weights to {machine_of(rig, g)} over the network: "
                     f"about {_duration(secs)} ({how}).")
    return notes


def _duration(secs: float) -> str:
    if secs < 90:
        return f"{max(1, round(secs))} s"
    return f"{secs / 60:,.1f} min" if secs < 5400 else f"{secs / 3600:,.1f} h"

