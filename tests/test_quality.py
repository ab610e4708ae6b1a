"""The published quality loss per quant type (phoenix_gui/data/quant-quality.jsonl) and its loader."""

from __future__ import annotations

import json
import math

import pytest

from phoenix_gui.model import quality
from phoenix_gui.model.quants import BY_NAME
from phoenix_gui.resources import resource

GOOD = {"quant": "Q4_K_M", "metric": "kld", "value": 0.031273, "model": "Llama-3-8B",
        "source": "https://github.com/ggml-org/llama.cpp/blob/master/tools/perplexity/README.md", "note": "x"}

# numbers copied by hand from the sources (not from the data file), to catch a typo in either
PUBLISHED = [
    # llama-quantize --help of the installed build: "+0.1754 ppl @ Llama-3-8B" ...
    ("Q4_K_M", "delta_ppl", "Llama-3-8B", 0.1754), ("Q2_K", "delta_ppl", "Llama-3-8B", 3.5199),
    ("Q8_0", "delta_ppl", "Llama-3-8B", 0.0026), ("BF16", "delta_ppl", "Mistral-7B", -0.0050),
    # tools/perplexity/README.md, LLaMA 3 8b Scoreboard
    ("Q4_K_M", "kld", "Llama-3-8B", 0.031273), ("IQ4_XS", "kld", "Llama-3-8B", 0.036334),
    ("IQ1_S", "kld", "Llama-3-8B", 2.254554), ("Q3_K_S", "kld", "Llama-3-8B", 0.228217),
    # ik_llama.cpp PR 83: Qerr(IQ4_XS) of Qwen-2.5-32B-Instruct
    ("IQ4_XS", "delta_ppl_pct", "Qwen2.5-32B-Instruct", 2.17),
    # ikawrakow/mistral-7b-quantized-gguf: PPL(llama.cpp) quantization error
    ("Q4_K_M", "delta_ppl_pct", "Mistral-7B", 1.08),
]

# every standard llama-quantize type and whether a published number exists for it
WITH_NUMBER = ["Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q5_0",
               "Q5_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S",
               "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_XS", "IQ4_NL", "F16", "BF16"]
WITHOUT_NUMBER = ["MXFP4_MOE"]


def lines(*rows) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


def test_shipped_file_loads_and_every_row_is_valid():
    rows = quality.load(resource("quant-quality.jsonl"))
    assert len(rows) >= 90
    for r in rows:
        assert r.quant in BY_NAME
        assert r.metric in quality.METRICS
        assert math.isfinite(r.value)
        assert r.model and r.source.startswith("https://")
    assert quality.measurements() == rows


def test_every_standard_type_is_covered_one_way_or_the_other():
    assert sorted(WITH_NUMBER + WITHOUT_NUMBER) == sorted(BY_NAME)


@pytest.mark.parametrize("quant", WITH_NUMBER)
def test_every_type_with_a_published_number_gets_it_with_its_source(quant):
    q = quality.quality_for(quant)
    assert q is not None
    assert set(q) >= {"metric", "value", "source", "model"}
    row = [r for r in quality.measurements()
           if r.quant == quant and r.model == q["model"] and r.metric == q["metric"]]
    assert len(row) == 1 and row[0].value == q["value"] and row[0].source == q["source"]
    assert q["source"].startswith("https://")


@pytest.mark.parametrize("quant", WITHOUT_NUMBER)
def test_no_measurement_is_none_not_a_guess(quant):
    assert quality.quality_for(quant) is None
    assert quality.quality_for(quant, "gpt-oss-20b") is None


@pytest.mark.parametrize("quant, metric, model, value", PUBLISHED)
def test_numbers_are_the_published_ones(quant, metric, model, value):
    row = [r for r in quality.measurements() if (r.quant, r.metric, r.model) == (quant, metric, model)]
    assert len(row) == 1
    assert row[0].value == pytest.approx(value, abs=1e-9)


def test_no_model_given_is_the_reference_model_and_says_so():
    q = quality.quality_for("Q4_K_M")
    assert q == {"metric": "kld", "value": pytest.approx(0.031273), "model": "Llama-3-8B",
                 "source": "https://github.com/ggml-org/llama.cpp/blob/master/tools/perplexity/README.md",
                 "basis": "reference"}
    assert quality.quality_for("q4_k_m")["value"] == q["value"]


def test_same_family_is_preferred():
    # Qwen2.5-32B has a published IQ4_XS number (ik_llama.cpp PR 83): that one, not Llama-3-8B's KLD
    q = quality.quality_for("IQ4_XS", "Qwen2.5-32B-Instruct-Q4_K_M")
    assert (q["model"], q["metric"], q["value"], q["basis"]) == ("Qwen2.5-32B-Instruct", "delta_ppl_pct", 2.17,
                                                                  "family")
    # another Qwen2.5 size gets the closest Qwen2.5 model, not a Llama
    assert quality.quality_for("IQ4_XS", "Qwen2.5-7B")["model"] == "Qwen2.5-7B-Instruct"
    # Mistral at Q4_K_M: the Mistral-7B number, not the reference Llama's
    q = quality.quality_for("Q4_K_M", "Mistral-7B-Instruct-v0.3")
    assert (q["model"], q["value"], q["basis"]) == ("Mistral-7B", 1.08, "family")
    # Llama-2-70B: its own model's numbers, KLD absent there so the relative delta
    q = quality.quality_for("Q3_K_M", "Llama-2-70b-chat")
    assert (q["model"], q["metric"], q["value"]) == ("Llama-2-70B", "delta_ppl_pct", 4.72)


def test_same_major_version_is_kin_and_exact_version_wins():
    # Llama-3.1 has its own IQ4_XS number; for Q4_K_M it falls back to Llama-3 (same major version)
    assert quality.quality_for("IQ4_XS", "Meta-Llama-3.1-8B")["model"] == "Llama-3.1-8B"
    q = quality.quality_for("Q4_K_M", "Meta-Llama-3.1-8B-Instruct")
    assert (q["model"], q["basis"]) == ("Llama-3-8B", "family")


def test_kld_is_preferred_over_ppl_on_the_chosen_model():
    # Llama-2-7B has both KLD and ΔPPL for Q4_K_M: the KLD
    q = quality.quality_for("Q4_K_M", "Llama-2-7B")
    assert (q["model"], q["metric"], q["value"]) == ("Llama-2-7B", "kld", 0.012686)
    # on Llama-3-8B the i-quants have both; KLD again
    assert quality.quality_for("IQ2_M", "Llama-3-8B")["metric"] == "kld"


def test_unrelated_family_falls_back_to_the_reference_and_says_so():
    q = quality.quality_for("Q3_K_S", "Qwen3-30B-A3B")
    assert (q["model"], q["metric"], q["basis"]) == ("Llama-3-8B", "kld", "reference")
    # "Qwen3" is not "Qwen2.5": no borrowing across versions of a family
    assert quality.quality_for("IQ4_XS", "Qwen3-30B-A3B")["model"] == "Llama-3-8B"


@pytest.mark.parametrize("name, fam", [
    ("Meta-Llama-3.1-8B-Instruct", ("llama", "3.1")), ("Llama-3-8B", ("llama", "3")),
    ("Qwen2.5-32B-Instruct", ("qwen", "2.5")), ("qwen2.5-32b-instruct-q4_k_m", ("qwen", "2.5")),
    ("Qwen3-30B-A3B", ("qwen", "3")), ("Mistral-7B", ("mistral", "")), ("LLaMA-v2-7B", ("llama", "2")),
    ("gemma-2-9b", ("gemma", "2")), ("GLM-4.5-Air", ("glm", "4.5")),
])
def test_family_of_a_name(name, fam):
    assert quality.family(name) == fam


# --- bad rows: refused with one sentence naming the line ---

@pytest.mark.parametrize("bad, words", [
    ('{"quant": "Q4_K_M", "metric": "kld", "value": NaN, "model": "M", "source": "https://x.org/a"}',
     "not a finite number"),
    ('{"quant": "Q4_K_M", "metric": "kld", "value": Infinity, "model": "M", "source": "https://x.org/a"}',
     "not a finite number"),
    ({**GOOD, "quant": "Q4_K_X"}, "unknown quant type 'Q4_K_X'"),
    ({**GOOD, "quant": "q4_k_m"}, "unknown quant type"),
    ({k: v for k, v in GOOD.items() if k != "source"}, "has no source"),
    ({**GOOD, "source": ""}, "has no source"),
    ({**GOOD, "source": "   "}, "has no source"),
    ({**GOOD, "source": "my notes"}, "not a web address"),
    ({**GOOD, "metric": "ppl"}, "metric 'ppl'"),
    ({**GOOD, "value": "0.03"}, "not a finite number"),
    ({**GOOD, "value": True}, "not a finite number"),
    ({**GOOD, "value": -0.1}, "negative KL divergence"),
    ({k: v for k, v in GOOD.items() if k != "model"}, "has no model"),
    ({**GOOD, "extra": 1}, "unknown field 'extra'"),
    ("[1, 2]", "not a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_bad_row_is_refused_naming_its_line(bad, words):
    text = lines(GOOD | {"quant": "Q8_0"}, "", bad)  # the bad row is on line 3
    with pytest.raises(quality.QualityDataError) as e:
        quality.parse(text, "quant-quality.jsonl")
    msg = str(e.value)
    assert msg.startswith("quant-quality.jsonl line 3 ")
    assert words in msg
    assert msg.endswith(".") and msg.count(". ") == 0  # one sentence


def test_duplicate_measurement_is_refused_naming_both_lines():
    with pytest.raises(quality.QualityDataError, match=r"line 2 repeats .* on line 1\."):
        quality.parse(lines(GOOD, GOOD))


def test_bad_file_on_disk_is_refused_and_good_one_read(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text(lines(GOOD, {**GOOD, "quant": "Q5_K_M", "value": float("nan")}), encoding="utf-8")
    with pytest.raises(quality.QualityDataError, match=r"^q\.jsonl line 2 has a value that is not a finite"):
        quality.load(p)
    p.write_text(lines(GOOD), encoding="utf-8")
    rows = quality.load(p)
    assert quality.quality_for("Q4_K_M", rows=rows)["value"] == 0.031273
    assert quality.quality_for("Q6_K", rows=rows) is None
    with pytest.raises(quality.QualityDataError, match="cannot be read"):
        quality.load(tmp_path / "missing.jsonl")



def test_family_beats_a_closer_size_of_another_family_and_size_decides_within_the_family():
    rows = quality.parse(lines(
        {**GOOD, "model": "Llama-3-8B", "value": 0.03},
        {**GOOD, "model": "Llama-3-8B", "quant": "Q6_K", "value": 0.005},
        {**GOOD, "model": "Qwen2.5-72B", "metric": "delta_ppl", "value": 0.2},
        {**GOOD, "model": "Qwen2.5-0.5B", "metric": "delta_ppl", "value": 0.9},
    ))
    # Llama-3-8B is the closest size to a 7B, but the Qwen2.5 rows are kin
    q = quality.quality_for("Q4_K_M", "Qwen2.5-7B-Instruct", rows=rows)
    assert (q["model"], q["metric"], q["basis"]) == ("Qwen2.5-72B", "delta_ppl", "family")
    assert quality.quality_for("Q4_K_M", "Qwen2.5-1.5B", rows=rows)["model"] == "Qwen2.5-0.5B"
    # not kin at all: the model with most rows in the file
    assert quality.quality_for("Q4_K_M", "Gemma-2-9B", rows=rows)["model"] == "Llama-3-8B"
    # a real case: Llama-2-70B has no IQ3_S number; of Llama-2-7B and -13B the 13B is closer
    q = quality.quality_for("IQ3_S", "Llama-2-70b-chat")
    assert (q["model"], q["value"]) == ("Llama-2-13B", 3.00)
