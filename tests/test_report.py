"""neurocert.report: the tidy table, LayerResults save/load, verdicts, HTML escaping, exemplars."""

from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pytest

import neurocert
from neurocert.exceptions import SchemaError, ValidationError
from neurocert.report import (
    NEURON_COLUMNS,
    PAIR_COLUMNS,
    ImageExemplar,
    ImageExemplars,
    LayerResults,
    TextExemplar,
    TextExemplars,
    encode_png,
    load_result,
    render_report,
    write_report,
)
from neurocert.simulate import planted_layer

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def layer_data():
    sep = [3.0, 2.0, 1.0, 0.4, 0.2, 3.0, 2.0, 1.0, 0.4, 0.2]
    lay = planted_layer(2500, 10, 7, concept_freq=0.15, separation=sep, n_planted=8, rng=3)
    names = [f"c{i}" for i in range(7)]
    names[2] = EVIL
    neurons = [f"unit {j}" for j in range(10)]
    neurons[4] = "</script><b id='pwn'>x</b>"
    expl = neurocert.bootstrap_explain(lay.activations, lay.concepts, metric="auroc", n_boot=150,
                                       rng=2, mode="both", concept_names=names,
                                       neuron_names=neurons, top_k=3)
    iou = neurocert.identify(lay.activations, lay.concepts, metric="iou", top_frac=0.05,
                             concept_names=names, neuron_names=neurons, top_k=3)
    return lay, expl, iou


# --------------------------------------------------------------------------- #
# Reference: the tidy table written straight from its definition, one neuron at a time
# --------------------------------------------------------------------------- #

def ref_rows(res, top_k):
    expl = res if isinstance(res, neurocert.ExplanationResult) else None
    ident = expl.identification if expl else res
    n, c = ident.similarity.shape
    rows = {}
    for j in range(n):
        sim = ident.similarity[j]
        ranked = sorted(range(c), key=lambda k: (math.isnan(sim[k]), -np.nan_to_num(sim[k]), k))
        top = set(ranked[:top_k])
        boot = set(expl.prediction_sets[j].tolist()) if expl and expl.mode != "split" else set()
        split = set(expl.split_sets[j].tolist()) if expl and expl.split_sets is not None else set()
        cert = set(ident.certified_sets[j].tolist())
        label = {int(ident.best[j])} if ident.best[j] >= 0 else set()
        for k in top | boot | split | cert | label:
            if k < 0:
                p = expl.none_probability[j]
                s = lo = hi = nu = np.nan
                rank = c + 1
            else:
                p = expl.probabilities[j, k] if expl else np.nan
                s, lo, hi, nu = (ident.similarity[j, k], ident.lower[j, k], ident.upper[j, k],
                                 ident.null[j, k])
                rank = ranked.index(k) + 1
            rows[(j, k)] = {"similarity": s, "lower": lo, "upper": hi, "null": nu, "probability": p,
                                "rank": rank, "in_top_k": k in top, "in_bootstrap_set": k in boot,
                                "in_split_set": k in split, "in_certified_set": k in cert,
                                "is_label": k in label, "bootstrap_set_size": len(
                                    expl.prediction_sets[j]) if expl and expl.mode != "split"
                                else 0, "certified_set_size": len(ident.certified_sets[j])}
    return rows


@pytest.mark.parametrize("which", ["expl", "iou"])
def test_tidy_table_matches_definition(layer_data, which):
    _, expl, iou = layer_data
    res = expl if which == "expl" else iou
    layer = LayerResults.from_results({"m": res}, top_k=3)
    t = layer.pairs
    assert list(t) == list(PAIR_COLUMNS)
    ref = ref_rows(res, 3)
    got = {(int(j), int(k)): i for i, (j, k) in enumerate(zip(t["neuron_index"],
                                                             t["concept_index"]))}
    assert set(got) == set(ref)
    for key, r in ref.items():
        i = got[key]
        for col, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                assert math.isnan(t[col][i]), (key, col)
            else:
                assert t[col][i] == v, (key, col, t[col][i], v)
    # rows of a neuron are ordered by similarity rank
    for j in range(layer.n_neurons):
        ranks = t["rank"][t["neuron_index"] == j]
        assert np.all(np.diff(ranks) > 0)
    ident = res.identification if which == "expl" else res
    assert np.all(t["n_samples"] == ident.n_samples) and np.all(t["delta"] == ident.delta)
    assert set(t["metric"]) == {ident.metric} and set(t["method"]) == {"m"}
    if which == "expl":
        se = np.sqrt(t["probability"] * (1 - t["probability"]) / expl.n_boot)
        np.testing.assert_allclose(t["probability_se"], se)
        assert np.all(t["alpha"] == expl.alpha) and np.all(t["n_boot"] == 150)
    else:
        assert np.isnan(t["probability"]).all() and not t["in_bootstrap_set"].any()


def test_layer_summary_and_verdicts(layer_data):
    _, expl, _ = layer_data
    layer = LayerResults.from_results({"auroc": expl})
    nt = layer.neuron_rows("auroc")
    assert list(layer.neurons) == list(NEURON_COLUMNS)
    ident = expl.identification
    certified = (ident.best >= 0) & (ident.best_lower > 0.5)  # default AUROC level
    np.testing.assert_array_equal(nt["certified"], certified)
    info = layer.method("auroc")
    assert info.n_certified == certified.sum() and info.level == 0.5
    assert info.expected_false == pytest.approx(0.05 * 10)
    for j in range(10):
        size = len(expl.prediction_sets[j])
        v, text = nt["verdict"][j], nt["verdict_text"][j]
        if not certified[j]:
            assert v == "not_certified" and text.startswith("not certified at this n")
        elif size == 1:
            assert v == "stable" and text.startswith("stable: one concept in the 95% set")
        else:
            assert v == "unstable" and text.startswith(f"unstable: {size} concepts in the 95% set")
    counts = layer.verdict_counts("auroc")
    assert sum(counts.values()) == 10 and counts["stable"] >= 1 and counts["not_certified"] >= 1


def test_multiplicity_in_session_and_error_when_loaded(layer_data, tmp_path):
    _, expl, _ = layer_data
    layer = LayerResults.from_results({"a": expl}, multiplicity="fwer", level=0.6)
    summ = expl.identification.summary(0.6, multiplicity="fwer")
    np.testing.assert_array_equal(layer.neurons["certified"], summ.certified)
    np.testing.assert_array_equal(layer.neurons["p_value"], summ.p_values)
    assert "Holm" in layer.method("a").guarantee
    expl.save(tmp_path / "e")
    with pytest.raises(ValidationError, match="needs per-neuron p-values"):
        LayerResults.from_results({"a": load_result(tmp_path / "e")}, multiplicity="fdr")


def test_several_methods_one_table(layer_data):
    _, expl, iou = layer_data
    layer = LayerResults.from_results({"auroc": expl, "iou": iou}, top_k=2)
    assert layer.method_names == ["auroc", "iou"]
    one = LayerResults.from_results({"iou": iou}, top_k=2)
    mask = layer.pairs["method"] == "iou"
    for col in PAIR_COLUMNS:
        a, b = layer.pairs[col][mask], one.pairs[col]
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), col
    assert layer.method("iou").level == 0.04
    df = layer.to_frame()
    assert len(df) == len(layer.pairs["method"]) and list(df.columns) == list(PAIR_COLUMNS)
    assert set(df["method"]) == {"auroc", "iou"}


def test_unnamed_results_named_by_metric(layer_data):
    _, expl, iou = layer_data
    layer = LayerResults.from_results([expl, iou, iou])
    assert layer.method_names == ["auroc", "iou", "iou-2"]


def test_different_layers_rejected(layer_data):
    _, expl, _ = layer_data
    lay = planted_layer(500, 3, 7, rng=0)
    other = neurocert.identify(lay.activations, lay.concepts, metric="auroc")
    with pytest.raises(ValidationError, match="different neurons"):
        LayerResults.from_results({"a": expl, "b": other})


def test_save_load_round_trip_and_csv(layer_data, tmp_path):
    _, expl, iou = layer_data
    layer = LayerResults.from_results({"auroc": expl, "iou": iou}, multiplicity="fdr")
    layer.save(tmp_path / "layer", csv=True)
    back = LayerResults.load(tmp_path / "layer")
    assert back == layer
    assert load_result(tmp_path / "layer") == layer
    assert back != LayerResults.from_results({"auroc": expl, "iou": iou})  # other multiplicity
    layer.write_table(tmp_path / "t.csv")
    pd = pytest.importorskip("pandas")
    csv = pd.read_csv(tmp_path / "t.csv")
    assert list(csv.columns) == list(PAIR_COLUMNS) and len(csv) == len(layer.pairs["method"])
    assert EVIL in set(csv["concept"])
    pq = pd.read_parquet(layer.write_table(tmp_path / "t.parquet"))
    np.testing.assert_allclose(pq["similarity"], layer.pairs["similarity"])


def test_load_rejects_other_schema_and_missing_columns(layer_data, tmp_path):
    _, expl, _ = layer_data
    layer = LayerResults.from_results({"a": expl})
    path = layer.save(tmp_path / "layer")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match="schema_version 99"):
        LayerResults.load(path)
    manifest["schema_version"] = 1
    manifest["tables"]["pairs"]["columns"].remove("probability")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaError, match="probability"):
        load_result(path)
    with pytest.raises(SchemaError, match="not a neurocert results directory"):
        load_result(tmp_path / "nothing")


def test_select_and_unknown_neuron(layer_data):
    _, expl, _ = layer_data
    layer = LayerResults.from_results({"a": expl})
    sub = layer.select(["unit 1", 7])
    assert sub.neuron_names == ("unit 1", "unit 7")
    assert set(sub.pairs["neuron_index"]) == {1, 7}
    assert sub.method("a").n_layer_neurons == 10 and sub.method("a").n_neurons == 2
    assert "of the 10 neurons certified together" in sub.method("a").statement()
    with pytest.raises(ValidationError, match="neuron 'unit 99' does not exist"):
        layer.select(["unit 99"])
    with pytest.raises(ValidationError, match="does not exist"):
        layer.select([10])


# --------------------------------------------------------------------------- #
# HTML
# --------------------------------------------------------------------------- #

def _data_block(html: str) -> dict:
    m = re.search(r"<script type='application/json' id='nc-data'>(.*?)</script>", html, re.DOTALL)
    assert m is not None
    return json.loads(m.group(1))


def test_report_escapes_names_and_embeds_data(layer_data):
    _, expl, iou = layer_data
    layer = LayerResults.from_results({"auroc": expl, "iou": iou})
    html = render_report(layer, title="t <i>x</i>")
    # the only <script> tags are our two; the names appear only escaped
    assert html.count("<script") == 2 and html.count("</script>") == 2
    assert "<b id='pwn'>" not in html and "<i>x</i>" not in html
    assert "&lt;i&gt;x&lt;/i&gt;" in html
    data = _data_block(html)
    assert data["neurons"][4] == "</script><b id='pwn'>x</b>"
    assert EVIL in data["concepts"]
    assert len(data["neurons"]) == 10 and len(data["methods"]) == 2
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)  # nothing remote
    # per-card concept rows: the label first kept, offsets consistent
    m0 = data["methods"][0]
    off = m0["r"]["off"]
    assert off[0] == 0 and off[-1] == len(m0["r"]["c"]) and len(off) == 11


def test_report_row_cap_counts_hidden_concepts(layer_data):
    _, expl, _ = layer_data
    layer = LayerResults.from_results({"a": expl}, top_k=7)
    data = _data_block(render_report(layer, max_concepts=2))
    r = data["methods"][0]["r"]
    per = np.diff(r["off"])
    total = np.bincount(layer.pairs["neuron_index"], minlength=10)
    np.testing.assert_array_equal(per, np.minimum(total, 2))
    np.testing.assert_array_equal(r["more"], total - per)
    labels = data["methods"][0]["n"]["label"]
    for j in range(10):
        shown = r["c"][r["off"][j]:r["off"][j + 1]]
        assert labels[j] in shown


def test_write_report_is_atomic(layer_data, tmp_path, monkeypatch):
    _, expl, _ = layer_data
    layer = LayerResults.from_results({"a": expl})
    out = tmp_path / "r.html"
    out.write_text("previous")
    import neurocert.report._html as h

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(h, "_script_json", boom)
    with pytest.raises(RuntimeError):
        write_report(layer, out)
    assert out.read_text() == "previous" and list(tmp_path.iterdir()) == [out]
    monkeypatch.undo()
    write_report(layer, out)
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_repr_html_escapes(layer_data):
    _, expl, _ = layer_data
    layer = LayerResults.from_results({"a": expl})
    for html in (layer._repr_html_(), expl._repr_html_()):
        assert "<script" not in html and "&lt;script&gt;" in html
        assert "<b id='pwn'>" not in html
    assert "95% set" in expl._repr_html_() and "verdict" in layer._repr_html_()


# --------------------------------------------------------------------------- #
# Exemplars
# --------------------------------------------------------------------------- #

def test_png_encoder_round_trips_through_pillow():
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (4, 3, 2), (6, 2, 3), (3, 9, 4)]:
        a = rng.integers(0, 256, size=shape, dtype=np.uint8)
        back = np.asarray(Image.open(io.BytesIO(encode_png(a))))
        np.testing.assert_array_equal(back, a)
    with pytest.raises(ValidationError):
        encode_png(np.zeros((2, 2), np.float32))


def test_image_exemplars_pick_top_samples_and_embed_once():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(40, 20, 20, 3), dtype=np.uint8)
    maps = rng.random((40, 3, 5, 5))
    prov = ImageExemplars(images, maps, k=3)
    for j in range(3):
        score = maps[:, j].reshape(40, -1).max(axis=1)
        ref = sorted(range(40), key=lambda i: (-score[i], i))[:3]
        got = prov(j)
        assert [e.key for e in got] == ref
        np.testing.assert_allclose(got[0].mask.max(), 1.0)
    lay = planted_layer(300, 3, 4, rng=0)
    layer = LayerResults.from_results({"a": neurocert.identify(lay.activations, lay.concepts,
                                                              metric="auroc")})
    data = _data_block(render_report(layer, exemplars=prov))
    keys = {k for j in range(3) for k in (e.key for e in prov(j))}
    assert len(data["img"]) == len(keys)  # shared samples are embedded once
    assert all(v.startswith("data:image/") for v in data["img"].values())
    assert all(item["m"].startswith("data:image/png;base64,") for ex in data["ex"] for item in ex)


def test_text_exemplars_highlight_the_peak():
    tokens = [["the", "cat", "sat"], ["a", "dog", "ran", "far"], ["x"]]
    acts = [np.array([[0.0], [2.0], [0.5]]), np.array([[0.1], [1.0], [0.2], [0.0]]),
            np.array([[np.nan]])]
    prov = TextExemplars(tokens, acts, k=2, window=8)
    ex = prov(0)
    assert [e.tokens for e in ex] == [["the", "cat", "sat"], ["a", "dog", "ran", "far"]]
    np.testing.assert_allclose(ex[0].weights, [0, 1, 0.25])
    np.testing.assert_allclose(ex[1].weights, [0.05, 0.5, 0.1, 0])
    lay = planted_layer(300, 1, 3, rng=0)
    layer = LayerResults.from_results(
        {"a": neurocert.identify(lay.activations, lay.concepts, metric="auroc")})
    html = render_report(layer, exemplars=lambda j: [TextExemplar(["<b>", "ok"], [1.0, 0.0])])
    assert "<b>" not in html.split("id='nc-data'>")[1].split("</script>")[0]
    with pytest.raises(ValidationError, match="ImageExemplar or TextExemplar"):
        render_report(layer, exemplars=lambda j: ["not an exemplar"])


def test_image_exemplar_data_uri_decodes():
    Image = pytest.importorskip("PIL.Image")
    from neurocert.report._exemplars import image_data_uri, mask_data_uri

    img = np.zeros((100, 50, 3), np.uint8)
    img[:, :25] = 255
    uri = image_data_uri(img, size=40)
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.size == (20, 40)
    m = mask_data_uri(np.array([[0.0, 1.0]]))
    alpha = np.asarray(Image.open(io.BytesIO(base64.b64decode(m.split(",", 1)[1]))))[..., 1]
    assert alpha[0, 0] == round(255 * 0.7) and alpha[0, 1] == 0
    assert isinstance(ImageExemplar(key=1, image=img), ImageExemplar)


def test_image_exemplars_with_map_callable():
    rng = np.random.default_rng(2)
    scores = rng.random((30, 2))
    calls = []

    def maps(i, j):
        calls.append((i, j))
        return np.full((3, 3), float(i))

    prov = ImageExemplars(lambda i: np.full((8, 8, 3), i, np.uint8), scores, k=2, maps=maps)
    got = prov(1)
    ref = sorted(range(30), key=lambda i: (-scores[i, 1], i))[:2]
    assert [e.key for e in got] == ref and calls == [(i, 1) for i in ref]
    top = max(ref)
    for e in got:  # scaled by the largest map value among the neuron's exemplars
        np.testing.assert_allclose(e.mask, e.key / top)
    with pytest.raises(ValidationError, match="maps"):
        ImageExemplars(np.zeros((30, 4, 4)), rng.random((30, 2, 2, 2)), maps=maps)


def test_report_renders_a_method_without_bound(layer_data):
    """soft-WPMI-style results (NaN delta and limits) render beside a bounded method."""
    import warnings

    from neurocert.dissect.clip import clip_dissect_explain, from_labels

    lay, expl, _ = layer_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        soft = clip_dissect_explain(lay.activations,
                                    from_labels(lay.concepts, concept_names=expl.concept_names),
                                    top_k=20, n_boot=20, rng=0, neuron_names=expl.neuron_names)
    assert math.isnan(soft.identification.delta)
    html = render_report(LayerResults.from_results({"auroc": expl, "soft_wpmi": soft}))
    data = _data_block(html)
    assert [m["delta"] for m in data["methods"]] == [expl.identification.delta, None]
    assert "no finite-sample bound" in html
