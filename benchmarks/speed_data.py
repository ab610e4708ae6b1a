"""Turn ../shared/data/speed-calibration.jsonl rows into speed-model scenarios."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from phoenix_gui.planner.speed import SpeedDevice

GIB = 1 << 30
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speed-calibration.jsonl"


@dataclass
class Scenario:
    row: dict
    devices: list[SpeedDevice]
    tg: float
    pp: float | None
    group: str  # rows from one source share a group (for grouped cross-validation)


def data_path() -> Path:
    return Path(os.environ.get("PHOENIX_SPEED_DATA", DEFAULT_DATA))


def _cpu_bw(d: dict) -> float:
    if d.get("theoretical_gbs"):
        return float(d["theoretical_gbs"])
    ch = d.get("channels") or 2
    mem = (d.get("memory") or "").upper()
    per = 44.8 if "DDR5" in mem else 25.6
    return ch * per


def load_scenarios(path: Path | None = None) -> tuple[list[Scenario], list[tuple[dict, str]]]:
    rows = [json.loads(line) for line in open(path or data_path(), encoding="utf-8") if line.strip()]
    out, skipped = [], []
    for r in rows:
        sc, why = scenario(r)
        if sc:
            out.append(sc)
        else:
            skipped.append((r, why))
    return out, skipped


def scenario(r: dict) -> tuple[Scenario | None, str]:
    if not r.get("tg_tps") or not r.get("model_size_gib"):
        return None, "no generation speed or size"
    if (r.get("split_mode") or "").startswith("row"):
        return None, "row split"
    size = r["model_size_gib"] * GIB
    n_layers = r.get("n_layers") or 32
    offloadable = n_layers + 1
    active = 1.0
    if r.get("moe_active_params_b") and r.get("params_b"):
        active = min(1.0, r["moe_active_params_b"] / r["params_b"] * 1.1)  # attention/embeddings are all read
    gpus = [d for d in r["devices"] if d.get("type") != "cpu"]
    cpus = [d for d in r["devices"] if d.get("type") == "cpu"]
    ngl = r.get("ngl")
    shares: list[float] = []
    if gpus:
        if all(d.get("layers") is not None for d in gpus):
            shares = [d["layers"] / offloadable for d in gpus]
        elif all(d.get("share") is not None for d in gpus):
            frac = 1.0 if ngl is None or ngl >= n_layers else ngl / offloadable
            if r["kind"] == "hybrid" and ngl is None:
                return None, "hybrid split unknown"
            tot = sum(d["share"] for d in gpus) or 1.0
            shares = [d["share"] / tot * frac for d in gpus]
        elif r["kind"] in ("single_gpu", "multi_gpu"):
            shares = [1.0 / len(gpus)] * len(gpus)
        else:
            return None, "hybrid split unknown"
    cpu_share = max(0.0, 1.0 - sum(shares))
    if cpus and cpus[0].get("layers") is not None and gpus:
        cpu_share = cpus[0]["layers"] / offloadable
    if r["kind"] == "cpu":
        cpu_share = 1.0
    devs = [SpeedDevice("gpu", d.get("arch") or "unknown", float(d["bandwidth_gbs"]), size * s * active,
                        s * offloadable, size * s) for d, s in zip(gpus, shares)]
    if cpu_share > 1e-6:
        if not cpus:
            return None, "CPU share without CPU facts"
        devs.append(SpeedDevice("cpu", "cpu", _cpu_bw(cpus[0]), size * cpu_share * active, cpu_share * offloadable,
                                size * cpu_share))
    group = r.get("source_url", "").split("/blob/")[0].split("#")[0]
    return Scenario(r, devs, float(r["tg_tps"]), r.get("pp_tps"), group), ""
