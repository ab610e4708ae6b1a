"""Compute-buffer estimates: the scratch llama.cpp reserves for the worst-case graph per device.

The engine sizes one buffer per backend to the peak of simultaneously live intermediates of a
prompt graph with n_ubatch tokens over the full KV cache. Memory is reused between layers, so the
widest layer (or the output stage on the output device) sets the peak, not the layer count.
The constants were fitted on llama-server's logged `compute buffer size` lines (CPU backend,
benchmarks/calibrate_compute.py); GPU buffers follow the same allocator.
"""

from __future__ import annotations

from dataclasses import dataclass

# Live f32 activation rows of a layer pass, in units of (n_ubatch x width x 4 bytes).
ACT_EMBD = 3.0  # residual, normed input, attention output
ACT_FF = 3.0  # gate, up, activated product
ACT_QKV = 1.0  # q/k/v projections (each n_head x head_dim)
SCORES_COPIES = 2.0  # without flash attention: KQ scores and their softmax
OUT_EXTRA_EMBD = 2.0  # normed final hidden state next to the logits
FIXED = 2 << 20  # inputs, positions, small tensors
FA_GPU_TEMP_ROWS = 64  # CUDA flash attention keeps per-head partial results for long caches


@dataclass(frozen=True)
class ComputeInputs:
    n_ubatch: int
    n_kv: int  # cells of the largest (non-SWA) cache the graph attends over
    flash_attn: bool


def layer_peak(model, ci: ComputeInputs) -> int:
    u = ci.n_ubatch
    E = model.n_embd
    n_head = max(model.n_head) or 1
    if model.is_moe:
        ff = model.expert_ff * max(model.n_expert_used, 1) + max(model.n_ff)
        ff += model.n_expert * 2  # router logits and probabilities
    else:
        ff = max(model.n_ff)
    q = n_head * model.key_length
    act = u * 4 * (ACT_EMBD * E + ACT_FF * ff + ACT_QKV * q)
    if ci.flash_attn:
        mask = ci.n_kv * u * 2  # f16 mask
        scores = 0
    else:
        mask = ci.n_kv * u * 4
        scores = SCORES_COPIES * ci.n_kv * u * n_head * 4
    return int(act + mask + scores + FIXED)


def output_peak(model, ci: ComputeInputs) -> int:
    u = ci.n_ubatch
    return int(u * 4 * (model.n_vocab + OUT_EXTRA_EMBD * model.n_embd) + FIXED)


def device_compute(model, ci: ComputeInputs, *, has_layers: bool, has_output: bool, gpu: bool,
                   host_weight_scratch: int = 0, pipeline_copies: int = 1) -> int:
    """Compute-buffer bytes of one device."""
    if not has_layers and not has_output and not host_weight_scratch:
        return 0
    peak = 0
    if has_layers:
        peak = layer_peak(model, ci)
    if has_output:
        peak = max(peak, output_peak(model, ci))
    if gpu and pipeline_copies > 1:
        # the scheduler keeps extra copies of each split's inputs
        peak += (pipeline_copies - 1) * ci.n_ubatch * model.n_embd * 4 * 2
    # op offload: a host-resident weight is copied here before a big-batch matmul
    return int(peak + host_weight_scratch)


def host_compute(model, ci: ComputeInputs, *, cpu_layers: bool, cpu_output: bool, any_gpu: bool) -> int:
    """The CPU side: inputs and embeddings (in the first GPU's pinned memory) plus CPU-layer scratch."""
    u = ci.n_ubatch
    inputs = u * model.n_embd * 4 * 2 + ci.n_kv * u * 4 + FIXED
    if not any_gpu:
        return device_compute(model, ci, has_layers=True, has_output=True, gpu=False)
    peak = inputs
    if cpu_layers:
        peak = max(peak, layer_peak(model, ci))
    if cpu_output:
        peak = max(peak, output_peak(model, ci))
    return int(peak)
