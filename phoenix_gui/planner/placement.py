"""Which device each layer lands on, following llama.cpp's layer-split rules.

Layer index n_layer stands for the output layer (output.weight + output_norm); the input
embeddings always stay on the CPU.
"""

from __future__ import annotations

import re
from bisect import bisect_right

CPU = -1


def normalise_split(weights: list[float], n_devices: int) -> list[float]:
    """Cumulative split boundaries (cum[last] == 1), llama.cpp style; missing entries count as 0."""
    w = [max(0.0, float(x)) for x in list(weights)[:n_devices]] + [0.0] * max(0, n_devices - len(weights))
    total = sum(w)
    if total <= 0:
        w = [1.0] * n_devices
        total = float(n_devices)
    cum, acc = [], 0.0
    for x in w:
        acc += x
        cum.append(acc / total)
    return cum


def offload_range(n_layer: int, ngl: int, n_devices: int, output_layer_first: bool = True) -> tuple[int, int]:
    """(first offloaded layer index, number offloaded) of the n_layer + 1 offloadable layers.
    output_layer_first: the engine profile's n_gpu_layers rule (False: builds before Dec 2025)."""
    ngl = max(0, ngl)
    if output_layer_first:
        start = max(n_layer + 1 - ngl, 0)
    else:
        start = max(n_layer - ngl, 0)
    act = 0 if n_devices == 0 else min(ngl, n_layer + 1)
    return start, act


def plan_layers(n_layer: int, ngl: int, split: list[float], output_layer_first: bool = True) -> list[int]:
    """Device index (into the split's device list) for layers 0..n_layer; CPU = -1."""
    n_dev = len(split)
    start, act = offload_range(n_layer, ngl, n_dev, output_layer_first)
    out = [CPU] * (n_layer + 1)
    if act == 0:
        return out
    cum = normalise_split(split, n_dev)
    for il in range(start, n_layer + 1):
        if il - start >= act:
            break
        x = (il - start) / act
        # upper_bound: the first device whose cumulative share exceeds x
        d = bisect_right(cum, x)
        out[il] = min(d, n_dev - 1)
    if not output_layer_first and ngl <= n_layer:
        out[n_layer] = CPU  # the old rule offloads the output layer only when ngl > n_layer
    return out


def layer_counts(assign: list[int], n_devices: int) -> list[int]:
    counts = [0] * n_devices
    for d in assign:
        if d >= 0:
            counts[d] += 1
    return counts


def exact_split(counts: list[int]) -> list[float]:
    """A tensor split of integer layer counts gives each device exactly that many layers."""
    return [float(c) for c in counts]


# --- tensor overrides (-ot REGEX=BUFT, koboldcpp --overridetensors; --moecpu is a special case) ---

_BUFT = re.compile(r"^(?:CUDA|Vulkan|RPC)(\d+)(?:\[[^\]]*\])?$")


def override_device(buft: str) -> int | None:
    """The device an override's buffer type names: CPU, or the n-th GPU of the plan ("CUDA1" -> 1; an
    RPC device "RPC0[host:port]" -> 0). None: not a buffer type Phoenix knows."""
    if buft == "CPU":
        return CPU
    m = _BUFT.match(buft)
    return int(m.group(1)) if m else None


def moecpu_overrides(moecpu: int) -> list[tuple[str, str]]:
    """--moecpu N / --n-cpu-moe N as the overrides the engines add after the user's own."""
    return [(rf"blk\.{i}\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU") for i in range(moecpu)]


def tensor_moves(model, assign: list[int], overrides) -> tuple[list[dict[int, int]], int]:
    """Per layer (index n_layer = the output layer): bytes of the tensors an override sends away from
    the layer's own device, by destination; and the largest matrix sent to the CPU (the first GPU copies
    it for a big-batch matmul). llama.cpp tries the patterns in order with regex_search and the first
    match wins; a tensor matched to its own layer's device stays."""
    pats = [(re.compile(rx), override_device(buft)) for rx, buft in overrides]
    moves: list[dict[int, int]] = []
    largest = 0
    groups = [layer.tensors for layer in model.layers] + [model.output_tensors]
    for il, tensors in enumerate(groups):
        out: dict[int, int] = {}
        for t in tensors:
            dest = next((d for rx, d in pats if rx.search(t.name)), None)
            if dest is not None and dest != assign[il]:
                out[dest] = out.get(dest, 0) + t.nbytes
                if dest == CPU and len(t.shape) > 1:
                    largest = max(largest, t.nbytes)
        moves.append(out)
    return moves, largest
