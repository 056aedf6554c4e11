"""Activation extraction: tiny models with hand-set weights whose activations are known exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scipy.signal import correlate2d

from neurocert.exceptions import NeurocertError, ValidationError
from neurocert.extract import (
    Activations,
    Float16OverflowWarning,
    Projection,
    extract_activations,
    state_dict_sha256,
)

nn = torch.nn


# --------------------------------------------------------------------------- #
# Tiny models
# --------------------------------------------------------------------------- #

KERNELS = np.array([
    [[1, 0, -1], [2, 0, -2], [1, 0, -1]],  # Sobel x
    [[1, 1, 1], [1, 1, 1], [1, 1, 1]],     # box
    [[0, 0, 0], [0, 1, 0], [0, 0, 0]],     # identity
], dtype=np.float32)


class ConvNet(nn.Module):
    """conv (3 fixed 3x3 kernels, bias [0, -1, 0.5]) -> relu -> flatten-mean -> linear identity."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.relu = nn.ReLU()
        self.head = nn.Linear(3, 3)
        self.unused = nn.Linear(3, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(KERNELS[:, None]))
            self.conv.bias.copy_(torch.tensor([0.0, -1.0, 0.5]))
            self.head.weight.copy_(torch.eye(3))
            self.head.bias.zero_()
            self.unused.weight.zero_()
            self.unused.bias.zero_()
        self.calls = 0
        self.fail_at: int | None = None
        self.interrupt = False

    def forward(self, x):
        if self.fail_at is not None and self.calls == self.fail_at:
            self.calls += 1
            raise (KeyboardInterrupt() if self.interrupt else RuntimeError("boom at batch"))
        self.calls += 1
        h = self.relu(self.conv(x))
        return self.head(h.mean(dim=(2, 3)))


def conv_reference(x: np.ndarray) -> np.ndarray:
    """(n, 1, H, W) -> relu(conv) (n, 3, H-2, W-2), straight from the definition (cross-correlation)."""
    bias = np.array([0.0, -1.0, 0.5])
    out = np.stack([
        np.stack([correlate2d(img[0], k, mode="valid") + b for k, b in zip(KERNELS, bias)])
        for img in x.astype(np.float64)
    ])
    return np.maximum(out, 0.0)


class ToyEncoder(nn.Module):
    """A transformer-shaped module: embedding -> "intermediate" (identity linear) per token.

    Token t embeds as row t of a fixed table; the padding token 0 embeds as 1000 so any
    leak of padding into pooling shows.
    """

    def __init__(self, vocab: int = 6, dim: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.intermediate = nn.Linear(dim, dim)
        with torch.no_grad():
            table = torch.arange(vocab * dim, dtype=torch.float32).reshape(vocab, dim) - 5.0
            table[0] = 1000.0
            self.embed.weight.copy_(table)
            self.intermediate.weight.copy_(torch.eye(dim))
            self.intermediate.bias.zero_()

    def forward(self, input_ids, attention_mask=None):
        return (self.intermediate(self.embed(input_ids)), "extra tuple element")


def toy_table() -> np.ndarray:
    t = np.arange(18, dtype=np.float64).reshape(6, 3) - 5.0
    t[0] = 1000.0
    return t


def char_collate(texts, *, left: bool = False):
    """'abc' -> token ids 1,2,3 padded with 0 to the batch's longest text; mask of real tokens."""
    length = max(len(t) for t in texts)
    ids = np.zeros((len(texts), length), dtype=np.int64)
    mask = np.zeros((len(texts), length), dtype=np.int64)
    for i, t in enumerate(texts):
        row = [ord(c) - 96 for c in t]
        sl = slice(length - len(row), length) if left else slice(0, len(row))
        ids[i, sl] = row
        mask[i, sl] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


char_collate.neurocert_key = "char-ids-v1"
TEXTS = ["abc", "e", "dcbae", "bb", "a", "eeee", "cab"]


def images(n: int = 10, size: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, size, size)).astype(np.float32)


def no_hooks(model) -> bool:
    return all(not m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------- #
# Exact values
# --------------------------------------------------------------------------- #

def test_conv_spatial_and_pooled_match_reference():
    x = images()
    ref = conv_reference(x)
    acts = extract_activations(ConvNet(), x, layers=["relu", "conv"], batch_size=3, progress_bar=False,
                               pooling={"relu": "spatial", "conv": "max"})
    spatial = acts["relu"]
    assert isinstance(spatial, Activations) and spatial.values.shape == (10, 3, 5, 5)
    np.testing.assert_allclose(spatial.values, ref, rtol=1e-5, atol=1e-5)
    pre_relu_max = (ref.max(axis=(2, 3)))  # relu is monotone, so max(relu(z)) = relu(max z)
    np.testing.assert_allclose(np.maximum(acts["conv"].values, 0), pre_relu_max, rtol=1e-5, atol=1e-5)
    mean = extract_activations(ConvNet(), x, layers="relu", pooling="mean", progress_bar=False)["relu"]
    np.testing.assert_allclose(mean.values, ref.mean(axis=(2, 3)), rtol=1e-5, atol=1e-5)
    assert mean.groups is None and mean.n_samples == 10 and mean.n_neurons == 3


def test_linear_identity_and_batch_size_invariance():
    x = np.random.default_rng(1).normal(size=(11, 3)).astype(np.float32)
    lin = nn.Linear(3, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
        lin.bias.zero_()
    model = nn.Sequential(lin)
    for bs in (1, 4, 11, 64):
        got = extract_activations(model, x, layers=["0"], batch_size=bs, progress_bar=bs == 4)["0"].values
        np.testing.assert_array_equal(got, x)


def test_token_rows_groups_positions_and_pooling_honour_the_mask():
    table = toy_table()
    acts = extract_activations(
        ToyEncoder(), TEXTS, layers=["intermediate", "embed"], collate=char_collate, batch_size=3,
        pooling={"intermediate": "tokens", "embed": "mean"}, progress_bar=False)
    tok = acts["intermediate"]
    rows, groups, positions = [], [], []
    for i, t in enumerate(TEXTS):  # reference straight from the definition
        for j, c in enumerate(t):
            rows.append(table[ord(c) - 96])
            groups.append(i)
            positions.append(j)
    np.testing.assert_allclose(tok.values, np.array(rows))
    np.testing.assert_array_equal(tok.groups, groups)
    np.testing.assert_array_equal(tok.positions, positions)
    assert tok.values.shape == (sum(map(len, TEXTS)), 3) and tok.n_samples == len(TEXTS)
    means = np.array([np.mean([table[ord(c) - 96] for c in t], axis=0) for t in TEXTS])
    np.testing.assert_allclose(acts["embed"].values, means, rtol=1e-6)

    for mode, fn in (("max", lambda r: np.max(r, axis=0)), ("cls", lambda r: r[0])):
        left = lambda texts: char_collate(texts, left=True)
        left.neurocert_key = "left"
        got = extract_activations(ToyEncoder(), TEXTS, layers=["intermediate"], collate=left,
                                  batch_size=4, pooling=mode, progress_bar=False)["intermediate"]
        want = np.array([fn(np.array([table[ord(c) - 96] for c in t])) for t in TEXTS])
        np.testing.assert_allclose(got.values, want)


def test_mapping_inputs_are_passed_as_keywords():
    enc = char_collate(TEXTS)
    got = extract_activations(ToyEncoder(), {k: v.numpy() for k, v in enc.items()}, layers=["intermediate"],
                              pooling="tokens", batch_size=2, progress_bar=False)["intermediate"]
    ref = extract_activations(ToyEncoder(), TEXTS, layers=["intermediate"], collate=char_collate,
                              pooling="tokens", batch_size=5, progress_bar=False)["intermediate"]
    np.testing.assert_array_equal(got.values, ref.values)
    np.testing.assert_array_equal(got.groups, ref.groups)


def test_projection_sae_probe_tcav():
    rng = np.random.default_rng(2)
    x = images(6)
    w = rng.normal(size=(3, 5)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    ref = conv_reference(x)  # (n, 3, 5, 5)
    proj_ref = np.maximum(np.einsum("nchw,ck->nkhw", ref, w) + b[None, :, None, None], 0)
    acts = extract_activations(ConvNet(), x, layers=["relu"], pooling="spatial",
                               projection=Projection(w, b, relu=True), progress_bar=False)["relu"]
    assert acts.values.shape == (6, 5, 5, 5) and acts.projection is not None
    np.testing.assert_allclose(acts.values, proj_ref, rtol=1e-4, atol=1e-4)
    pooled = extract_activations(ConvNet(), x, layers=["relu"], pooling="max",
                                 projection=Projection(w, b, relu=True), progress_bar=False)["relu"]
    np.testing.assert_allclose(pooled.values, proj_ref.max(axis=(2, 3)), rtol=1e-4, atol=1e-4)
    # tokens: a plain matrix (probe/TCAV directions), projected per token then mean-pooled over real tokens
    w2 = rng.normal(size=(3, 2)).astype(np.float32)
    got = extract_activations(ToyEncoder(), TEXTS, layers=["intermediate"], collate=char_collate,
                              pooling="mean", projection={"intermediate": w2}, progress_bar=False)
    table = toy_table()
    want = np.array([np.mean([table[ord(c) - 96] @ w2 for c in t], axis=0) for t in TEXTS])
    np.testing.assert_allclose(got["intermediate"].values, want, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValidationError, match="has 4 rows but the layer has 3 features"):
        extract_activations(ConvNet(), x, layers=["relu"], projection=np.ones((4, 2)), progress_bar=False)
    with pytest.raises(ValidationError, match="bias"):
        Projection(np.ones((3, 2)), np.ones(3))


def test_float16_storage_and_overflow_warning():
    x = images(5)
    f32 = extract_activations(ConvNet(), x, layers=["relu"], pooling="spatial", progress_bar=False)["relu"]
    f16 = extract_activations(ConvNet(), x, layers=["relu"], pooling="spatial", dtype="float16",
                              progress_bar=False)["relu"]
    assert f16.values.dtype == np.float16
    np.testing.assert_array_equal(f16.values, f32.values.astype(np.float16))
    with pytest.warns(Float16OverflowWarning):
        extract_activations(ConvNet(), x * 1e5, layers=["relu"], dtype=np.float16, progress_bar=False)


def test_eval_mode_during_and_restored_after():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.9))
    model.train()
    x = np.ones((8, 4), np.float32)
    a = extract_activations(model, x, layers=["1"], progress_bar=False)["1"].values
    b = extract_activations(model, x, layers=["1"], progress_bar=False)["1"].values
    np.testing.assert_array_equal(a, b)  # dropout off
    assert all(m.training for m in model.modules())
    model[0].eval()  # mixed flags are restored per module
    extract_activations(model, x, layers=["1"], progress_bar=False)
    assert model.training and not model[0].training and model[1].training


# --------------------------------------------------------------------------- #
# Hooks
# --------------------------------------------------------------------------- #

def test_hooks_removed_when_forward_raises():
    model = ConvNet()
    model.fail_at = 1
    with pytest.raises(RuntimeError, match="boom"):
        extract_activations(model, images(), layers=["conv", "relu"], batch_size=4, progress_bar=False)
    assert no_hooks(model)
    model.calls, model.interrupt = 0, True
    with pytest.raises(KeyboardInterrupt):
        extract_activations(model, images(), layers=["conv"], batch_size=4, progress_bar=False)
    assert no_hooks(model)
    model.fail_at = None
    extract_activations(model, images(), layers=["conv"], progress_bar=False)
    assert no_hooks(model)


def test_wrong_path_lists_closest_names():
    model = nn.Module()
    model.encoder = nn.Module()
    model.encoder.layer = nn.ModuleList([nn.Sequential() for _ in range(4)])
    for block in model.encoder.layer:
        block.intermediate = nn.Linear(2, 2)
    with pytest.raises(ValidationError, match=r"closest valid names: 'encoder\.layer\.3\.intermediate'"):
        extract_activations(model, np.ones((2, 2)), layers=["encoder.layer.3.intermediat"], progress_bar=False)
    with pytest.raises(ValidationError, match="_blocks.10"):
        blocks = nn.Module()
        blocks._blocks = nn.ModuleList([nn.Identity() for _ in range(12)])
        extract_activations(blocks, np.ones((2, 2)), layers=["_block.10"], progress_bar=False)
    with pytest.raises(ValidationError, match="given twice"):
        extract_activations(ConvNet(), images(), layers=["conv", "conv"], progress_bar=False)


def test_bracket_paths_are_normalised():
    model = nn.Sequential(nn.Sequential(nn.Identity(), nn.ReLU()))
    acts = extract_activations(model, -np.ones((2, 3), np.float32), layers=["0[1]"], progress_bar=False)
    assert acts["0[1]"].layer == "0.1" and (acts["0[1]"].values == 0).all()


def test_hook_that_never_fires_or_fires_twice():
    model = ConvNet()
    with pytest.raises(ValidationError, match="'unused'.*never fired"):
        extract_activations(model, images(), layers=["conv", "unused"], progress_bar=False)
    assert no_hooks(model)
    relu = nn.ReLU()
    twice = nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)
    with pytest.raises(ValidationError, match="fired 2 times"):
        extract_activations(twice, np.ones((2, 2), np.float32), layers=["1"], progress_bar=False)
    assert no_hooks(twice)


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #

def test_bad_inputs_give_clear_errors():
    x = images(4)
    m = ConvNet()
    with pytest.raises(ValidationError, match="no spatial axes"):
        extract_activations(m, x, layers=["head"], pooling="spatial", progress_bar=False)
    with pytest.raises(ValidationError, match="needs a token sequence"):
        extract_activations(m, x, layers=["conv"], pooling="tokens", progress_bar=False)
    with pytest.raises(ValidationError, match="`dtype` must be 'float16' or 'float32'"):
        extract_activations(m, x, layers=["conv"], dtype="int8", progress_bar=False)
    with pytest.raises(ValidationError, match="`device`"):
        extract_activations(m, x, layers=["conv"], device="nonsense", progress_bar=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValidationError, match="cuda.is_available"):
            extract_activations(m, x, layers=["conv"], device="cuda", progress_bar=False)
    with pytest.raises(ValidationError, match="`pooling`"):
        extract_activations(m, x, layers=["conv"], pooling="avg", progress_bar=False)
    with pytest.raises(ValidationError, match="`batch_size`"):
        extract_activations(m, x, layers=["conv"], batch_size=0, progress_bar=False)
    with pytest.raises(ValidationError, match="empty"):
        extract_activations(m, x[:0], layers=["conv"], progress_bar=False)
    with pytest.raises(ValidationError, match="collate="):
        extract_activations(ToyEncoder(), TEXTS, layers=["embed"], progress_bar=False)
    with pytest.raises(ValidationError, match="torch.nn.Module"):
        extract_activations(lambda t: t, x, layers=["conv"], progress_bar=False)
    with pytest.raises(ValidationError, match="no real token"):
        enc = char_collate(["ab", "c"])
        enc["attention_mask"][1] = 0
        extract_activations(ToyEncoder(), dict(enc), layers=["embed"], progress_bar=False)
    with pytest.raises(ValidationError, match="shape changed"):  # 'none' with variable lengths
        extract_activations(ToyEncoder(), TEXTS, layers=["embed"], pooling="none", batch_size=2,
                            collate=char_collate, progress_bar=False)


# --------------------------------------------------------------------------- #
# Cache
# --------------------------------------------------------------------------- #

def _entries(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def test_cache_hit_is_memmap_equal_to_fresh_and_skips_the_model(tmp_path):
    x = images(9)
    fresh = extract_activations(ConvNet(), x, layers=["relu", "head"], progress_bar=False)
    m = ConvNet()
    first = extract_activations(m, x, layers=["relu", "head"], cache_dir=tmp_path, batch_size=4,
                                progress_bar=False)
    assert m.calls == 3
    again = extract_activations(m, x, layers=["relu", "head"], cache_dir=tmp_path, batch_size=2,
                                progress_bar=False)
    assert m.calls == 3  # a hit does not run the model
    for layer in ("relu", "head"):
        assert isinstance(again[layer].values, np.memmap) and again[layer].from_cache
        assert not again[layer].values.flags.writeable
        np.testing.assert_array_equal(again[layer].values, fresh[layer].values)
        np.testing.assert_array_equal(first[layer].values, fresh[layer].values)
    assert len(_entries(tmp_path)) == 2 and not any(p.endswith(".partial") for p in _entries(tmp_path))
    meta = json.loads((Path(again["relu"].cache_path) / "meta.json").read_text())
    assert meta["layer"] == "relu" and meta["pooling"] == "mean" and meta["n_rows"] == 9

    # a partially cached request only runs the missing layer
    both = extract_activations(m, x, layers=["conv", "relu"], cache_dir=tmp_path, progress_bar=False)
    assert m.calls == 4 and both["relu"].from_cache and len(_entries(tmp_path)) == 3


def test_cache_misses_on_any_change(tmp_path):
    x = images(6)
    base = {"layers": ["relu"], "cache_dir": tmp_path, "progress_bar": False}
    extract_activations(ConvNet(), x, **base)
    n = len(_entries(tmp_path))
    changed = ConvNet()
    with torch.no_grad():
        changed.conv.weight[0, 0, 0, 0] += 1e-3
    variants = [
        lambda: extract_activations(changed, x, **base),                                  # weights
        lambda: extract_activations(ConvNet(), x, **dict(base, layers=["conv"])),         # layer
        lambda: extract_activations(ConvNet(), x, pooling="max", **base),                 # pooling
        lambda: extract_activations(ConvNet(), x + np.float32(1e-3), **base),             # inputs
        lambda: extract_activations(ConvNet(), x, dtype="float16", **base),               # dtype
        lambda: extract_activations(ConvNet(), x, projection=np.eye(3), **base),          # projection
        lambda: extract_activations(ConvNet(), x, preprocess=lambda t: t * 2, cache_key="x2", **base),
    ]
    for i, run in enumerate(variants, start=1):
        assert not next(iter(run().values())).values.flags.writeable
        assert len(_entries(tmp_path)) == n + i, f"variant {i} hit the cache"
    # unchanged: a hit (no new entry)
    extract_activations(ConvNet(), x.copy(), **base)
    assert len(_entries(tmp_path)) == n + len(variants)


def test_cache_needs_preprocess_identity(tmp_path):
    with pytest.raises(ValidationError, match="neurocert_key"):
        extract_activations(ConvNet(), images(3), layers=["relu"], preprocess=lambda t: t, cache_dir=tmp_path,
                            progress_bar=False)
    fn = lambda t: t * 3
    fn.neurocert_key = "times3"
    got = extract_activations(ConvNet(), images(3), layers=["relu"], preprocess=fn, cache_dir=tmp_path,
                              pooling="spatial", progress_bar=False)["relu"].values
    np.testing.assert_allclose(got, conv_reference(images(3) * 3), rtol=1e-5, atol=1e-4)


def test_state_dict_hash():
    a, b = ConvNet(), ConvNet()
    assert state_dict_sha256(a) == state_dict_sha256(b)
    with torch.no_grad():
        b.head.bias[1] = 1e-7
    assert state_dict_sha256(a) != state_dict_sha256(b)
    s1 = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    s2 = nn.Sequential(nn.Linear(2, 2), nn.GELU())
    s2.load_state_dict(s1.state_dict())
    assert state_dict_sha256(s1) != state_dict_sha256(s2)  # same weights, other architecture
    s3 = nn.Sequential(nn.Linear(2, 2), nn.ReLU()).to(torch.bfloat16)
    assert len(state_dict_sha256(s3)) == 64


@pytest.mark.parametrize("pooling", ["spatial", "tokens"])
@pytest.mark.parametrize("interrupt", [False, True])
def test_interrupted_extraction_resumes_identically(tmp_path, pooling, interrupt):
    if pooling == "spatial":
        x, layer, make, kw = images(11), "relu", ConvNet, {}
    else:
        x, layer, make, kw = TEXTS * 2, "intermediate", ToyEncoder, {"collate": char_collate}
    fresh = extract_activations(make(), x, layers=[layer], pooling=pooling, progress_bar=False, **kw)[layer]

    class Failing(make):  # same repr and weights as `make`: the same cache key
        def forward(self, *a, **k):
            if self.stop_at is not None and self.n_calls == self.stop_at:
                raise KeyboardInterrupt() if interrupt else RuntimeError("boom")
            self.n_calls += 1
            return super().forward(*a, **k)

    Failing.__name__ = Failing.__qualname__ = make.__qualname__
    Failing.__module__ = make.__module__
    model = Failing()
    model.stop_at, model.n_calls = 2, 0
    with pytest.raises(KeyboardInterrupt if interrupt else RuntimeError):
        extract_activations(model, x, layers=[layer], pooling=pooling, batch_size=3, cache_dir=tmp_path,
                            progress_bar=False, **kw)
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1
    state = json.loads((partial[0] / "progress.json").read_text())
    assert state["samples_done"] == 6  # two batches of 3 committed
    # a torn write after the last progress record is truncated on resume
    with open(partial[0] / "values.npy", "ab") as fh:
        fh.write(b"\x7f" * (1 << 16))  # longer than the rest of the data
    model.stop_at, model.n_calls = None, 0
    resumed = extract_activations(model, x, layers=[layer], pooling=pooling, batch_size=3, cache_dir=tmp_path,
                                  progress_bar=False, **kw)[layer]
    n = len(x)
    assert model.n_calls == -(-(n - 6) // 3)  # only the remaining batches ran
    np.testing.assert_array_equal(resumed.values, fresh.values)
    if pooling == "tokens":
        np.testing.assert_array_equal(resumed.groups, fresh.groups)
        np.testing.assert_array_equal(resumed.positions, fresh.positions)
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    values_file = Path(resumed.cache_path) / "values.npy"
    assert values_file.stat().st_size == 256 + fresh.values.nbytes  # header reserve + rows, nothing stray


def test_resume_with_another_batch_size(tmp_path):
    x = images(10)
    model = ConvNet()
    model.fail_at = 1
    with pytest.raises(RuntimeError):
        extract_activations(model, x, layers=["relu", "conv"], pooling="spatial", batch_size=4,
                            cache_dir=tmp_path, progress_bar=False)
    model.fail_at = None
    got = extract_activations(model, x, layers=["relu", "conv"], pooling="spatial", batch_size=3,
                              cache_dir=tmp_path, progress_bar=False)
    ref = conv_reference(x)
    np.testing.assert_allclose(got["relu"].values, ref, rtol=1e-5, atol=1e-5)


def test_resume_alongside_a_new_layer(tmp_path):
    """One layer's partial entry is 6 samples ahead of a newly requested one: the pass restarts at 0
    and the ahead layer skips the samples it has, also inside a batch (batch 4, entry at 6)."""
    x = images(11)
    ref = extract_activations(ConvNet(), x, layers=["relu", "conv"], pooling="spatial", progress_bar=False)
    model = ConvNet()
    model.fail_at = 2
    with pytest.raises(RuntimeError):
        extract_activations(model, x, layers=["relu"], pooling="spatial", batch_size=3, cache_dir=tmp_path,
                            progress_bar=False)
    model.fail_at, model.calls = None, 0
    got = extract_activations(model, x, layers=["conv", "relu"], pooling="spatial", batch_size=4,
                              cache_dir=tmp_path, progress_bar=False)
    assert model.calls == 3
    for layer in ("relu", "conv"):
        np.testing.assert_array_equal(got[layer].values, ref[layer].values)


def test_stale_partial_with_another_key_is_discarded(tmp_path):
    x = images(5)
    out = extract_activations(ConvNet(), x, layers=["relu"], cache_dir=tmp_path, progress_bar=False)["relu"]
    entry = Path(out.cache_path)
    partial = entry.with_name(entry.name + ".partial")
    entry.rename(partial)
    (partial / "progress.json").write_text(json.dumps({"format": "x", "key": "other"}))
    again = extract_activations(ConvNet(), x, layers=["relu"], cache_dir=tmp_path, progress_bar=False)["relu"]
    np.testing.assert_array_equal(again.values, out.values)


def test_lock_held_elsewhere_is_an_error(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    x = images(3)
    out = extract_activations(ConvNet(), x, layers=["relu"], cache_dir=tmp_path / "a", progress_bar=False)["relu"]
    name = Path(out.cache_path).name
    (tmp_path / "b" / ".locks").mkdir(parents=True)
    with open(tmp_path / "b" / ".locks" / f"{name}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(NeurocertError, match="another process"):
            extract_activations(ConvNet(), x, layers=["relu"], cache_dir=tmp_path / "b", progress_bar=False)


def test_import_does_not_import_torch():
    code = "import sys, neurocert.extract, neurocert.extract.models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_torch_import_works_and_use_names_the_extra():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import neurocert.extract as e, neurocert.extract.models as m\n"
        "assert not m.efficientnet_lite0_available() and not m.minilm_available()\n"
        "try:\n    e.extract_activations(None, [1], layers=['a'])\n"
        "except ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("OptionalDependencyError") and "neurocert[torch]" in out.stdout


def test_repr_is_short():
    acts = extract_activations(ToyEncoder(), TEXTS, layers=["embed"], pooling="tokens", collate=char_collate,
                               progress_bar=False)["embed"]
    text = repr(acts)
    assert "pooling='tokens'" in text and "groups=int64(" in text and len(text) < 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert acts.n_neurons == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_model_returns_to_its_device():
    x = images(8)
    model = ConvNet()
    cpu = extract_activations(model, x, layers=["relu"], pooling="spatial", progress_bar=False)["relu"]
    gpu = extract_activations(model, x, layers=["relu"], pooling="spatial", device="cuda", dtype="float16",
                              progress_bar=False)["relu"]
    assert next(model.parameters()).device.type == "cpu"
    assert gpu.values.dtype == np.float16
    np.testing.assert_allclose(gpu.values.astype(np.float32), cpu.values, rtol=2e-3, atol=2e-3)
    tok = extract_activations(ToyEncoder().cuda(), TEXTS, layers=["intermediate"], pooling="tokens",
                              collate=char_collate, progress_bar=False)["intermediate"]
    assert tok.values.shape == (sum(map(len, TEXTS)), 3)
