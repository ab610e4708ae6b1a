"""Turn the speed measurements (phoenix_gui/data/speed-calibration.jsonl) into planner inputs.

Every row becomes a rig, a model and plan settings, so its prediction goes through make_plan like
a user's plan does. The model is built from the row's facts (parameters, layers, file size, MoE
active parameters) with the usual shapes of its family (vocabulary, grouped KV heads, tied
embeddings); what a row does not say is filled with the plain defaults below.

PHOENIX_SPEED_DATA=FILE points at another file with the same fields (e.g. a held-out set).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from phoenix_gui.hardware.rig import GpuInfo, Rig, SystemInfo
from phoenix_gui.hardware.specs import architecture_for, find_spec
from phoenix_gui.model.info import LayerInfo, ModelInfo, TensorInfo
from phoenix_gui.engines.llama_server.profile import LLAMA_CPP_OLD, LLAMA_SERVER_CURRENT
from phoenix_gui.planner.settings import PlanSettings
from phoenix_gui.planner.speed import DEVICE_CLASSES, SMALL_PASCAL_CHIPS, quant_family

GIB = 1 << 30
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "phoenix_gui" / "data" / "speed-calibration.jsonl"
REGIMES = ("single_gpu", "multi_gpu", "hybrid", "cpu", "moe")


@dataclass
class Case:
    row: dict
    rig: Rig
    model: ModelInfo
    settings: PlanSettings
    tg: float
    source: str  # rows of one source are always on the same side of a fold
    labels: list[str] = field(default_factory=list)  # regime, "moe", build era


def data_path() -> Path:
    return Path(os.environ.get("PHOENIX_SPEED_DATA", DEFAULT_DATA))


def load_rows(path: Path | None = None) -> list[dict]:
    return [json.loads(line) for line in open(path or data_path(), encoding="utf-8") if line.strip()]


def load_cases(path: Path | None = None) -> tuple[list[Case], list[tuple[dict, str]]]:
    out, skipped = [], []
    for r in load_rows(path):
        c, why = case(r)
        if c:
            out.append(c)
        else:
            skipped.append((r, why))
    return out, skipped


def source_of(r: dict) -> str:
    """One benchmark source: a repository's files, or one issue / pull request / page."""
    url = (r.get("source_url") or "").split(" ")[0]
    return url.split("/blob/")[0].split("#")[0].rstrip("/")


def era_of(r: dict) -> str:
    """"old" for builds before mid-December 2025 (the engine profiles' boundary), else "current"."""
    m = re.match(r"(\d{4})(?:-(\d{2}))?", str(r.get("date") or ""))
    if not m:
        return "old"
    year, month = int(m.group(1)), int(m.group(2) or 1)
    return "current" if (year, month) >= (2025, 12) else "old"


# --- the model -------------------------------------------------------------------------------

def _family(name: str, params_b: float) -> tuple[int, bool, bool]:
    """(vocabulary, tied embeddings, one KV head per query head) from the model's name."""
    n = name.lower()
    small = params_b <= 4.1
    if "gemma" in n:
        return 262144, True, False
    if "qwen" in n:
        return 151936, small, False
    if "llama 3" in n or "llama-3" in n:
        return 128256, small, False
    if "phi-4" in n:
        return 100352, False, False
    if "phi-3" in n:
        return 32064, False, True
    if "nemo" in n:
        return 131072, False, False
    if "deepseek-r1 671" in n or "deepseek-v3" in n:
        return 129280, False, False
    if "mistral 7b" in n and "v0.3" in n:
        return 32768, False, False
    if "llama 2" in n or "llama-2" in n:
        return 32000, False, True
    return 32000, small, False


def _quant_name(q: str) -> str:
    q = (q or "").upper().removeprefix("UD-")
    return re.sub(r"^Q(\d)_K([SML])$", r"Q\1_K_\2", q)


# The tensor types of a file type, as llama.cpp's quantizer mixes them (src/llama-quant.cpp's rules, simplified):
# (main type, attn_v type, ffn_down type, attn_output type, output type). The bytes come from the row's
# file size; the types say which kernel each weight runs (planner/speed.py prices kernels per type).
_RECIPES = {
    "F16": ("f16",) * 5, "BF16": ("bf16",) * 5, "Q8_0": ("q8_0",) * 5,
    "Q4_0": ("q4_0", "q4_0", "q4_0", "q4_0", "q6_k"), "Q4_1": ("q4_1", "q4_1", "q4_1", "q4_1", "q6_k"),
    "Q5_0": ("q5_0", "q5_0", "q5_0", "q5_0", "q6_k"), "Q5_1": ("q5_1", "q5_1", "q5_1", "q5_1", "q6_k"),
    "Q2_K": ("q2_k", "q3_k", "q3_k", "q3_k", "q6_k"), "Q3_K_S": ("q3_k", "q3_k", "q3_k", "q3_k", "q6_k"),
    "Q3_K_M": ("q3_k", "q4_k", "q4_k", "q4_k", "q6_k"), "Q3_K_L": ("q3_k", "q5_k", "q5_k", "q5_k", "q6_k"),
    "Q4_K_S": ("q4_k", "q5_k", "q4_k", "q4_k", "q6_k"), "Q4_K_M": ("q4_k", "q6_k", "q6_k", "q4_k", "q6_k"),
    "Q5_K_S": ("q5_k", "q5_k", "q5_k", "q5_k", "q6_k"), "Q5_K_M": ("q5_k", "q6_k", "q6_k", "q5_k", "q6_k"),
    "Q6_K": ("q6_k",) * 5, "IQ4_XS": ("iq4_xs", "iq4_xs", "iq4_xs", "iq4_xs", "q6_k"),
    "IQ4_NL": ("iq4_nl", "iq4_nl", "iq4_nl", "iq4_nl", "q6_k"),
    "IQ1_S": ("iq1_s", "q4_k", "iq2_xxs", "iq2_xxs", "q6_k"), "IQ1_M": ("iq1_m", "q4_k", "iq2_xxs", "iq2_xxs", "q6_k"),
    "IQ2_XXS": ("iq2_xxs", "q4_k", "iq2_xxs", "iq2_xxs", "q6_k"), "IQ2_XS": ("iq2_xs", "q4_k", "iq2_xs", "iq2_xs", "q6_k"),
    "IQ2_M": ("iq2_s", "q4_k", "iq3_s", "iq2_s", "q6_k"), "IQ3_XXS": ("iq3_xxs", "iq3_xxs", "iq3_xxs", "iq3_xxs", "q6_k"),
    "IQ3_M": ("iq3_s", "q4_k", "q4_k", "iq3_s", "q6_k"), "IQ3_XS": ("iq3_s", "iq3_s", "iq3_s", "iq3_s", "q6_k"),
}


def _recipe(q: str) -> tuple[int, ...]:
    from phoenix_gui.model.ggml_types import type_by_name
    q = _quant_name(q)
    r = _RECIPES.get(q) or next((v for k, v in _RECIPES.items() if q.startswith(k)), _RECIPES["Q4_K_M"])
    return tuple(type_by_name(x) for x in r)


def _layers_for(params_b: float) -> int:
    for limit, n in ((2, 16), (4.5, 28), (10, 32), (16, 40), (40, 64)):
        if params_b <= limit:
            return n
    return 80


def synth_model(r: dict) -> ModelInfo:
    P = float(r["params_b"]) * 1e9
    A = float(r.get("moe_active_params_b") or 0) * 1e9 or P
    L = int(r.get("n_layers") or _layers_for(r["params_b"]))
    V, tied, mha = _family(r.get("model", ""), r["params_b"])
    # parameters per layer ~ 13 E^2 (attention with grouped KV + a 3.5E-wide gated FFN); the
    # embeddings add V*E (tied) or 2*V*E: solve for the width from the active parameters
    a, b = 13.0 * L, V * (1 if tied else 2)
    E = int((-b + math.sqrt(b * b + 4 * a * A)) / (2 * a)) // 64 * 64 or 64
    kv = E if mha else max(128, E // 4)
    size = float(r["model_size_gib"]) * GIB
    bpw = size * 8 / P
    # k-quant files keep the output matrix at 6.56 bits (Q6_K); others at their own width
    out_bpw = max(bpw, 6.56) if _quant_name(r["quant"]).startswith(("Q2", "Q3", "Q4_K", "Q5_K", "IQ")) else bpw
    embd_bytes = int(V * E * bpw / 8)
    out_bytes = 0 if tied else int(V * E * out_bpw / 8)
    per_layer = max(1.0, (size - embd_bytes - out_bytes) / L)
    main_t, v_t, down_t, o_t, out_t = _recipe(r["quant"])
    moe = bool(r.get("moe_active_params_b"))
    n_expert, n_used = (0, 0)
    if moe:
        n_expert, n_used = (8, 2) if "mixtral" in r.get("model", "").lower() else (128, 8)
        if n_used / n_expert >= A / P:
            n_used = max(1, int(n_expert * A / P / 2))
    def tt(k: str) -> int:
        return {"attn_v.weight": v_t, "ffn_down.weight": down_t, "attn_output.weight": o_t}.get(k, main_t)

    layers = []
    for il in range(L):
        attn = {"attn_q.weight": (E, E), "attn_k.weight": (E, kv), "attn_v.weight": (E, kv), "attn_output.weight": (E, E)}
        if moe:
            # dense d + experts x: d + x = P/L, d + x*used/n = A/L (per layer, embeddings aside)
            f = n_used / n_expert
            x_share = (P - A) / (1 - f) / P
            attn_elems = sum(s[0] * s[1] for s in attn.values())
            dense_b = per_layer * (1 - x_share)
            exp_b = per_layer * x_share
            ts = [TensorInfo(f"blk.{il}.{k}", s, tt(k), int(dense_b * s[0] * s[1] / attn_elems)) for k, s in attn.items()]
            ff = max(64, int(exp_b * 8 / bpw / (3 * E * n_expert)))
            ts += [TensorInfo(f"blk.{il}.ffn_{k}_exps.weight", (E, ff, n_expert), down_t if k == "down" else main_t,
                              int(exp_b / 3)) for k in ("gate", "up", "down")]
        else:
            ff_w = 3.5 * E
            shapes = {**attn, "ffn_gate.weight": (E, int(ff_w)), "ffn_up.weight": (E, int(ff_w)), "ffn_down.weight": (int(ff_w), E)}
            tot = sum(s[0] * s[1] for s in shapes.values())
            ts = [TensorInfo(f"blk.{il}.{k}", s, tt(k), int(per_layer * s[0] * s[1] / tot)) for k, s in shapes.items()]
        layers.append(LayerInfo(il, ts))
    n_head = max(1, E // 128)
    outputs = [TensorInfo("output_norm.weight", (E,), 0, E * 4)]
    if not tied:
        outputs.append(TensorInfo("output.weight", (E, V), out_t, out_bytes))
    return ModelInfo(
        path=None, parts=[], architecture="llama", name=r.get("model", "model"), size_label=f"{r['params_b']}B",
        file_type=_quant_name(r["quant"]), n_layer=L, n_embd=E, n_head=[n_head] * L, n_head_kv=[max(1, kv // 128)] * L,
        key_length=128, value_length=128, n_ff=[int(3.5 * E)] * L, n_vocab=V, n_ctx_train=131072,
        n_expert=n_expert, n_expert_used=n_used, expert_ff=0, sliding_window=0, swa_layers=[False] * L,
        kv_lora_rank=0, q_lora_rank=0, tied_embeddings=tied, layers=layers,
        input_tensors=[TensorInfo("token_embd.weight", (E, V), out_t if tied else main_t, embd_bytes)], output_tensors=outputs,
        file_size=int(size), n_params=int(P))


# --- the rig ---------------------------------------------------------------------------------

# Public core counts of the CPUs in the data whose names do not state them (vendor spec pages).
CPU_CORES = {"i9-13900HK": (14, 20), "i9-10900X": (10, 20), "i7-14700KF": (20, 28), "i5-9500": (6, 6),
             "Ryzen AI Max+ 395": (16, 32), "Raspberry Pi 5": (4, 4), "Threadripper PRO 7965WX": (24, 48),
             "Threadripper 3970X": (32, 64), "i7-8700": (6, 12), "Ryzen 9 5900X": (12, 24), "Ryzen 9 7950X": (16, 32)}


def _cpu_cores(d: dict) -> tuple[int, int]:
    name = d.get("name") or ""
    m = re.search(r"(\d+)C/(\d+)T", name)
    if m:
        return int(m.group(1)), int(m.group(2))
    for key, cores in CPU_CORES.items():
        if key in name:
            return cores
    m = re.search(r"\((\d+)C\)", name)
    if m:
        return int(m.group(1)), 2 * int(m.group(1))
    return 8, 16


def _cpu_bw(d: dict) -> float:
    if d.get("theoretical_gbs"):
        return float(d["theoretical_gbs"])
    ch = d.get("channels") or 2
    per = 44.8 if "DDR5" in (d.get("memory") or "").upper() else 25.6
    return ch * per


def _gpu(i: int, d: dict) -> GpuInfo:
    spec = find_spec(d.get("spec_name") or d["name"], d.get("vram_gb"))
    vram = int(float(d.get("vram_gb") or (spec.vram_gib if spec else 24)) * GIB)
    cc = tuple(int(x) for x in spec.compute_capability.split(".")[:2]) if spec else (8, 0)
    arch = d.get("arch") or (spec.architecture if spec else architecture_for(cc))
    return GpuInfo(index=i, name=d.get("spec_name") or d["name"], uuid=f"GPU-{i}", pci_bus_id=f"0000:{i + 1:02x}:00.0",
                   total_bytes=vram, free_bytes=vram, used_bytes=0, compute_capability=cc, architecture=arch,
                   bandwidth_gbs=float(d.get("bandwidth_gbs") or (spec.bandwidth_gbs if spec else 500)),
                   bandwidth_source="rig file", bus_width_bits=spec.bus_bits if spec else 0)


def synth_rig(r: dict) -> tuple[Rig, int | None]:
    gpus = [_gpu(i, d) for i, d in enumerate(x for x in r["devices"] if x.get("type") != "cpu")]
    cpus = [d for d in r["devices"] if d.get("type") == "cpu"]
    cpu = cpus[0] if cpus else {}
    phys, logical = _cpu_cores(cpu)
    system = SystemInfo(ram_total_bytes=1 << 40, ram_available_bytes=1 << 40, physical_cores=phys,
                        logical_cores=logical, ram_bandwidth_gbs=_cpu_bw(cpu), ram_bandwidth_source="table",
                        cpu_name=cpu.get("name", ""))
    return Rig(name=r.get("model", "row"), gpus=gpus, system=system, simulated=True), cpu.get("threads")


# --- the settings ----------------------------------------------------------------------------

def _kv_fill(r: dict) -> int:
    """Cached tokens on average during the measured generation."""
    test = r.get("test") or ""
    m = re.search(r"tg\s?(\d+)", test)
    if m:
        return int(m.group(1)) // 2
    m = re.search(r"(\d+) generated tokens", test)
    if m:
        return int(m.group(1)) // 2 + 64
    return 128


def synth_settings(r: dict, model: ModelInfo, rig: Rig, threads: int | None) -> tuple[PlanSettings | None, str]:
    n_gpu = len(rig.gpus)
    ngl = r.get("ngl")
    gdevs = [d for d in r["devices"] if d.get("type") != "cpu"]
    eng = LLAMA_CPP_OLD if era_of(r) == "old" else LLAMA_SERVER_CURRENT
    base = PlanSettings(context=max(256, int(r.get("ctx") or 512)), backend="llama-server", engine=eng.name,
                        kv_fill=_kv_fill(r), threads=threads, lowvram="nkvo" in (r.get("test") or ""),
                        # llama-bench and llama-server ran without flash attention until it became
                        # "auto" (on for CUDA) in 2025
                        flash_attn=era_of(r) == "current")
    if r["kind"] == "cpu" or n_gpu == 0:
        return base.with_(devices=(), gpulayers=0), ""
    if (r.get("split_mode") or "").startswith("row"):
        return None, "row split"
    if all(d.get("layers") is not None for d in gdevs):
        counts = [int(d["layers"]) for d in gdevs]
        return base.with_(gpulayers=int(ngl) if ngl is not None else sum(counts),
                          tensor_split=tuple(float(c) for c in counts)), ""
    shares = [d.get("share") for d in gdevs]
    if r["kind"] == "hybrid" and ngl is None:
        return None, "hybrid split unknown"
    if all(s is not None for s in shares):
        split = tuple(float(s) for s in shares)
    elif r["kind"] in ("single_gpu", "multi_gpu"):
        split = tuple(1.0 for _ in gdevs)
    elif r.get("tensor_split"):
        try:
            split = tuple(float(x) for x in str(r["tensor_split"]).split(","))
        except ValueError:
            return None, "tensor split unreadable"
    else:
        split = tuple(1.0 for _ in gdevs)
    gl = None if ngl is None or ngl > model.n_layer else int(ngl)
    return base.with_(gpulayers=gl, tensor_split=split), ""


def row_class(r: dict) -> str:
    """The row's device class (planner/speed.py DEVICE_CLASSES)."""
    gdevs = [d for d in r["devices"] if d.get("type") != "cpu"]
    if r["kind"] == "cpu" or not gdevs:
        return DEVICE_CLASSES[2]
    for d in gdevs:
        spec = find_spec(d.get("spec_name") or d["name"], d.get("vram_gb"))
        if spec and spec.architecture == "Pascal" and spec.chip in SMALL_PASCAL_CHIPS:
            return DEVICE_CLASSES[0]
    return DEVICE_CLASSES[1]


def case(r: dict) -> tuple[Case | None, str]:
    if not r.get("tg_tps") or not r.get("model_size_gib") or not r.get("params_b"):
        return None, "no generation speed, size or parameter count"
    if r.get("prompt_style"):
        return None, "prompt-style test (ubatch 1): not a decode measurement"
    if r.get("kind") not in ("single_gpu", "multi_gpu", "hybrid", "cpu"):
        return None, "unknown kind"
    model = synth_model(r)
    rig, threads = synth_rig(r)
    s, why = synth_settings(r, model, rig, threads)
    if s is None:
        return None, why
    labels = ([r["kind"]] + (["moe"] if r.get("moe_active_params_b") else []) + ["era " + era_of(r)]
              + [quant_family(model.file_type), row_class(r)])
    return Case(r, rig, model, s, float(r["tg_tps"]), source_of(r), labels), ""
