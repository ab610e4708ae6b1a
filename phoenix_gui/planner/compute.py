"""Compute-buffer estimates: the scratch llama.cpp reserves for the worst-case graph per device.

The engine reserves, without running it, a prompt graph of n_ubatch tokens over the full KV
cache and sizes one buffer per backend to the peak of simultaneously live intermediates. Memory
is reused between layers, so the widest stage of one layer sets the peak, not the layer count;
every device holding a layer pays about the same.

Peaks measured with llama-server's logged `compute buffer size` (benchmarks/calibrate_compute.py,
f32 values per ubatch token):
  dense, flash attention on  : 3 n_ff + 3 n_embd            (the FFN stage), + f16 mask n_kv
                               + n_embd on the device holding the input layer (the CPU: the embeddings)
                               + n_embd on the device holding the output layer
      (5 n_embd on a CPU running everything; 4 on the CPU and 3 on the other device under partial offload
      and with the output layer moved off a device: logged on koboldcpp 1.115.1 over an RPC device for
      qwen2 and llama, and gemma3 held out: tests/test_koboldcpp_real.py)
  attention without flash    : n_head n_kv + n_kv + 3.3 n_embd + 3.1 q_width   (scores, mask ...)
  MoE FFN stage              : 7.1 n_embd + n_used (1.15 n_embd + 1.43 expert_ff)
The logits term depends on the engine build (EngineProfile.logits_full_ubatch): the llama-server
build calibrated here reserves one row of logits per sequence; older builds and koboldcpp 1.115.1
reserve n_vocab x n_ubatch floats on the output device.
"""

from __future__ import annotations

from dataclasses import dataclass

SAFETY = 1.05  # the fits above are within a few percent; err on the side of not OOMing
FIXED = 2 << 20  # positions, small inputs, allocator alignment


@dataclass(frozen=True)
class ComputeInputs:
    n_ubatch: int
    n_kv: int  # cells of the largest (non-SWA) cache the graph attends over
    flash_attn: bool
    n_outputs: int = 1  # logits rows reserved: 1, or n_ubatch when the profile says logits_full_ubatch


def _ffn_floats(model, ends: int = 2) -> float:
    """f32 per ubatch token of the FFN stage; `ends` = how many of the input and output layers the device
    holds (each keeps one n_embd-wide activation live through it)."""
    E = model.n_embd
    dense = 3 * max(model.n_ff) + (3 + ends) * E
    if model.is_moe:
        # fitted on CPU-only loads (both ends); not re-measured per end, so kept whole
        used = max(model.n_expert_used, 1)
        moe = 7.1 * E + used * (1.15 * E + 1.43 * model.expert_ff)
        dense_ff = max(model.n_ff) if any(model.n_ff) and model.expert_ff and max(model.n_ff) != model.expert_ff * 8 else 0
        # models with dense leading layers (DeepSeek) or a shared expert also need the dense stage
        return max(moe, 3 * dense_ff + (3 + ends) * E) if dense_ff and not model.architecture.startswith("qwen3moe") else moe
    return dense


def layer_peak(model, ci: ComputeInputs, *, with_input: bool = True, with_output: bool = True) -> int:
    """The widest stage of one layer on a device; with_input / with_output: the device also holds the
    input layer (only the CPU does) / the output layer."""
    u = ci.n_ubatch
    E = model.n_embd
    n_head = max(model.n_head) or 1
    q_width = n_head * model.key_length
    ffn = _ffn_floats(model, int(with_input) + int(with_output)) * 4 * u
    if ci.flash_attn:
        peak = ffn + ci.n_kv * u * 2  # the f16 mask is live throughout
    else:
        attn = (n_head * ci.n_kv + ci.n_kv + 3.3 * E + 3.1 * q_width) * 4 * u
        peak = max(attn, ffn + ci.n_kv * u * 4)
    return int(peak * SAFETY + FIXED)


def output_peak(model, ci: ComputeInputs) -> int:
    u = ci.n_ubatch
    return int((2 * model.n_embd * u * 4 + model.n_vocab * ci.n_outputs * 4) * SAFETY + FIXED)


def device_compute(model, ci: ComputeInputs, *, has_layers: bool, has_output: bool, gpu: bool,
                   host_weight_scratch: int = 0, pipeline_copies: int = 1) -> int:
    """Compute-buffer bytes of one device."""
    if not has_layers and not has_output and not host_weight_scratch:
        return 0
    peak = 0
    if has_layers:
        peak = layer_peak(model, ci, with_input=not gpu, with_output=has_output)
    if has_output:
        peak = max(peak, output_peak(model, ci))
    if gpu and pipeline_copies > 1:
        # the scheduler keeps extra copies of each split's inputs
        peak += (pipeline_copies - 1) * ci.n_ubatch * model.n_embd * 4 * 2
    # op offload: a host-resident weight is copied here before a big-batch matmul
    return int(peak + host_weight_scratch)


def host_compute(model, ci: ComputeInputs, *, cpu_layers: bool, cpu_output: bool, any_gpu: bool,
                 n_seq: int = 1) -> int:
    """The CPU side: logits output buffer, inputs and embeddings (pinned memory of the first GPU),
    plus the scratch of layers computed on the CPU."""
    out_buf = model.n_vocab * 4 * n_seq
    if not any_gpu:
        return out_buf + device_compute(model, ci, has_layers=True, has_output=True, gpu=False)
    u = ci.n_ubatch
    peak = int(u * model.n_embd * 4 * 2 + ci.n_kv * u * 2 + FIXED)
    if cpu_layers:
        peak = max(peak, layer_peak(model, ci, with_output=cpu_output))
    if cpu_output:
        peak = max(peak, output_peak(model, ci))
    return out_buf + peak
