"""NetDissect and CLIP-Dissect on the block backends against the single-machine results.

One LocalCluster with 2 worker processes on 127.0.0.1 for the module. Every result of
the Dask path and of the serial block path (blocks that do not divide the number of
units/neurons) must equal the in-memory public function for the same seed, bitwise
(results_equal: every field, NaN == NaN; plus explicit array comparisons of the labels,
limits, sets, probabilities and votes so a failure names the field).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_netdissect import make_set

from neurocert import distributed
from neurocert._compare import results_equal
from neurocert.dissect import clip
from neurocert.dissect import clip_kernels as ck
from neurocert.dissect.netdissect import (
    netdissect,
    netdissect_explain,
    netdissect_identify,
    netdissect_tally,
)
from neurocert.exceptions import ValidationError

pytest.importorskip("distributed")

pytestmark = pytest.mark.filterwarnings(
    "ignore::neurocert.exceptions.NoBoundWarning",
    "ignore::neurocert.exceptions.UndefinedSimilarityWarning",
    "ignore::neurocert.exceptions.OutOfGridWarning")


@pytest.fixture(scope="module")
def maps():
    acts, seg, _ = make_set(n=60, n_units=7, seed=3)
    return acts, seg


@pytest.fixture(scope="module")
def certset():
    """Enough images at q = 0.1 for p-values below 1 (certificates need n q >> log C)."""
    acts, seg, _ = make_set(n=300, n_units=4, seed=5, h=4, w=4, big_h=16, big_w=16,
                            n_obj=3, n_tex=1, n_col=2, noise=0.3)
    return acts, seg


@pytest.fixture(scope="module")
def layer():
    """150 neurons (blocks of 64 leave 22), concepts as cosines and as labels."""
    rng = np.random.default_rng(5)
    n, n_neurons, n_concepts = 240, 150, 6
    z = (rng.random((n, n_concepts)) < 0.3).astype(float)
    act = z @ rng.normal(size=(n_concepts, n_neurons)) + 0.5 * rng.normal(size=(n, n_neurons))
    act[:, 7] = np.round(act[:, 7])  # ties at the top-k boundary
    cos = np.clip(0.2 + 0.1 * z + 0.05 * rng.normal(size=z.shape), -1, 1)
    return act, z, cos


def same_identification(ref, got):
    assert results_equal(ref, got)
    np.testing.assert_array_equal(ref.similarity, got.similarity)
    np.testing.assert_array_equal(ref.lower, got.lower)
    np.testing.assert_array_equal(ref.upper, got.upper)
    np.testing.assert_array_equal(ref.best, got.best)
    assert [s.tolist() for s in ref.certified_sets] == [s.tolist() for s in got.certified_sets]
    assert ref.parameters == got.parameters or results_equal(ref, got)


def same_explanation(ref, got):
    assert results_equal(ref, got)
    same_identification(ref.identification, got.identification)
    np.testing.assert_array_equal(ref.probabilities, got.probabilities)
    np.testing.assert_array_equal(ref.winners, got.winners)
    np.testing.assert_array_equal(ref.ties, got.ties)
    np.testing.assert_array_equal(ref.intervals, got.intervals)
    assert [s.tolist() for s in ref.prediction_sets] == [s.tolist() for s in got.prediction_sets]
    if ref.split_sets is not None:
        assert [s.tolist() for s in ref.split_sets] == [s.tolist() for s in got.split_sets]
        np.testing.assert_array_equal(ref.fold_winners, got.fold_winners)


# --------------------------------------------------------------------------- NetDissect
def test_block_tally_uses_the_layers_p_value_band(certset):
    """A block's tally with layer_units equals the whole layer's on its units; without
    it the p-value band (delta / (2 m H_m)) and so the p-values would differ."""
    acts, seg = certset
    full = netdissect_tally(acts, seg, quantile=0.1, n_bins=64)
    block = netdissect_tally(acts[:, 2:4], seg, quantile=0.1, n_bins=64, layer_units=4)
    alone = netdissect_tally(acts[:, 2:4], seg, quantile=0.1, n_bins=64)
    np.testing.assert_array_equal(block.grid, full.grid[2:4])
    np.testing.assert_array_equal(block.band["p_value"][1], full.band["p_value"][1][2:4])
    assert block.band["p_value"][0] == full.band["p_value"][0] != alone.band["p_value"][0]
    ref = netdissect_identify(full).p_values(0.0)
    assert (ref < 1).all()
    np.testing.assert_array_equal(netdissect_identify(block).p_values(0.0), ref[2:4])
    assert not np.array_equal(netdissect_identify(alone).p_values(0.0), ref[2:4])


def test_netdissect_identify(client, maps, certset):
    acts, seg = maps
    ref = netdissect(acts, seg, quantile=0.02)
    on_dask = distributed.netdissect(acts, seg, quantile=0.02, client=client, neuron_block=3)
    serial = distributed.netdissect(acts, seg, quantile=0.02, neuron_block=2)
    for got in (on_dask, serial):
        same_identification(ref, got)
        assert type(got) is type(ref)
    # p-values (the multiplicity summaries) use the layer's band: bitwise too
    acts_c, seg_c = certset
    ref = netdissect(acts_c, seg_c, quantile=0.1)
    got = distributed.netdissect(acts_c, seg_c, quantile=0.1, client=client, neuron_block=3)
    same_identification(ref, got)
    pv = ref.p_values(0.0)
    assert (pv < 1).all()
    np.testing.assert_array_equal(pv, got.p_values(0.0))
    # fixed thresholds are sliced per block; the public backend= forwards
    thr = np.quantile(acts.transpose(1, 0, 2, 3).reshape(7, -1), 0.97, axis=1)
    ref = netdissect(acts, seg, thresholds=thr)
    same_identification(ref, netdissect(acts, seg, thresholds=thr, backend="dask",
                                        client=client))
    same_identification(ref, distributed.netdissect(acts, seg, thresholds=thr, neuron_block=4))


def test_netdissect_explain(client, maps, tmp_path):
    acts, seg = maps
    kw = {"quantile": 0.02, "n_boot": 16, "rng": 7, "mode": "both", "alpha": 0.2,
          "n_folds": 4}
    ref = netdissect_explain(acts, seg, **kw)
    on_dask = distributed.netdissect_explain(acts, seg, client=client, neuron_block=3, **kw)
    same_explanation(ref, on_dask)
    assert on_dask.parameters["out_of_grid"] == ref.parameters["out_of_grid"]
    # frozen threshold, Poisson weights, a .npy memory map read per block, serially
    path = tmp_path / "maps.npy"
    np.save(path, acts)
    kw = {"quantile": 0.02, "n_boot": 10, "rng": 3, "threshold": "frozen",
          "scheme": "poisson"}
    ref = netdissect_explain(acts, seg, **kw)
    same_explanation(ref, distributed.netdissect_explain(np.load(path, mmap_mode="r"), seg,
                                                         neuron_block=5, **kw))
    same_explanation(ref, netdissect_explain(str(path), seg, backend="blocks", **kw))
    # another seed gives other votes (the comparison can fail)
    other = distributed.netdissect_explain(acts, seg, neuron_block=5, **dict(kw, rng=4))
    assert not np.array_equal(other.winners, ref.winners)


def test_netdissect_backend_errors(maps):
    acts, seg = maps
    t = netdissect_tally(acts, seg, quantile=0.02)
    with pytest.raises(ValidationError, match="not a NetDissectTally"):
        netdissect_explain(t, backend="blocks")
    with pytest.raises(ValidationError, match="backend"):
        netdissect(acts, seg, backend="spark")
    with pytest.raises(ValidationError, match="client"):
        netdissect(acts, seg, backend="blocks", client="tcp://127.0.0.1:1")
    with pytest.raises(ValidationError, match="thresholds"):
        distributed.netdissect(acts, seg, thresholds=np.zeros(3))


# --------------------------------------------------------------------------- CLIP-Dissect
FUNCTIONS = [("soft_wpmi", {"top_k": 20}), ("wpmi", {"top_k": 10}),
             ("rank_reorder", {"top_fraction": 0.1}), ("cos", {}), ("cos_cubed", {})]


def test_prior_pools_every_neuron(layer):
    """The combined prior is logsumexp over all 150 neurons (Python-float reference); a
    block's own pieces alone give another prior."""
    act, _z, cos = layer
    cm = clip.from_precomputed(cos)
    s = clip._setup(act, cm, kind=None, function="soft_wpmi", top_k=20, a=None, lam=None,
                    min_prob=1e-7, p_start=0.998, p_end=0.97, power=3.0, top_fraction=0.05,
                    scale_p=0.5, min_norm=1e-3, sample_weight=None, dtype="float64")
    lg = s.log_given(None).astype(np.float64)
    tops, sums = ck.prior_parts(lg)
    assert tops.shape == (3, 6)
    prior = ck.combine_prior(tops, sums, 150)
    for d in range(6):
        m = max(lg[:, d])
        want = m + math.log(math.fsum(math.exp(x - m) for x in lg[:, d])) - math.log(150)
        assert prior[d] == pytest.approx(want, rel=0, abs=1e-12)
    first_block = ck.combine_prior(tops[:1], sums[:1], 64)
    assert not np.allclose(first_block, prior)
    scores = clip.concept_scores(act, cm, top_k=20, dtype="float64")
    np.testing.assert_array_equal(scores, lg - prior[None, :])


@pytest.mark.parametrize("function,kw", FUNCTIONS)
def test_clip_scores_and_labels(client, layer, function, kw):
    act, z, cos = layer
    for concepts, kind in ((cos, "cosine"), (z, "probability")):
        ref = clip.concept_scores(act, concepts, kind=kind, function=function, **kw)
        on_dask = distributed.concept_scores(act, concepts, kind=kind, function=function,
                                             client=client, neuron_block=64, **kw)
        serial = distributed.concept_scores(act, concepts, kind=kind, function=function,
                                            neuron_block=128, **kw)
        np.testing.assert_array_equal(on_dask, ref)
        np.testing.assert_array_equal(serial, ref)
    ref = clip.clip_dissect(act, cos, kind="cosine", function=function, **kw)
    same_identification(ref, clip.clip_dissect(act, cos, kind="cosine", function=function,
                                               backend="dask", client=client, **kw))
    same_identification(ref, distributed.clip_dissect(act, cos, kind="cosine",
                                                      function=function, neuron_block=64,
                                                      **kw))


@pytest.mark.parametrize("function,kw", [FUNCTIONS[0], FUNCTIONS[3]])
def test_clip_explain_on_dask(client, layer, function, kw):
    """The prior of every replicate and fold is one reduction over all blocks."""
    act, _z, cos = layer
    cm = clip.from_precomputed(cos)
    opts = dict(function=function, n_boot=6, rng=9, mode="both", alpha=0.2, **kw)
    ref = clip.clip_dissect_explain(act, cm, **opts)
    got = distributed.clip_dissect_explain(act, cm, client=client, neuron_block=64,
                                           batch_size=4, **opts)
    same_explanation(ref, got)


@pytest.mark.parametrize("function,kw", FUNCTIONS)
def test_clip_explain_blocks(layer, function, kw):
    act, z, _cos = layer
    weights = np.random.default_rng(1).integers(0, 3, act.shape[0]).astype(float)
    opts = dict(kind="probability", function=function, n_boot=5, rng=2, mode="both",
                alpha=0.2, sample_weight=weights, **kw)
    ref = clip.clip_dissect_explain(act, z, **opts)
    same_explanation(ref, distributed.clip_dissect_explain(act, z, neuron_block=64,
                                                           batch_size=2, **opts))
    same_explanation(ref, clip.clip_dissect_explain(act, z, backend="blocks", **opts))


def test_clip_errors(layer):
    act, z, _ = layer
    with pytest.raises(ValidationError, match="multiples of 64"):
        distributed.concept_scores(act, z, kind="probability", neuron_block=50)
    with pytest.raises(ValidationError, match="client"):
        clip.clip_dissect(act, z, kind="probability", backend="memory", client="x")
    with pytest.raises(ValidationError, match="exceeds"):
        clip.clip_dissect_explain(act, z, kind="probability", top_k=300, backend="blocks")
    # a block covering the layer may be any size
    np.testing.assert_array_equal(
        distributed.concept_scores(act[:, :10], z, kind="probability", neuron_block=100),
        clip.concept_scores(act[:, :10], z, kind="probability"))
