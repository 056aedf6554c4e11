"""The open_clip path of CLIP-Dissect's P and the torchvision shim.

No pretrained CLIP weights install offline, so the model is a tiny custom open_clip
config with random weights (``pretrained=None``). The reference for P is the model's
own ``forward`` (which normalises both embeddings itself), not the code under test.
Skipped without open_clip, except in CI (``NEUROCERT_REQUIRE_ASSETS=1``).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings

import numpy as np
import pytest
from conftest import require_asset

from neurocert.exceptions import NeurocertWarning, ValidationError

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                       "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1}}
NAME = "neurocert-test-tiny-ViT"
CONCEPTS = ["dog", "red", "striped texture", "sky", "a wheel"]


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def open_clip(tmp_path_factory):
    require_asset(_have("torch") and _have("open_clip"),
                  "torch + open_clip (pip install torch==2.13.0 torchvision==0.28.0 "
                  "open_clip_torch)")
    from neurocert._torchvision_shim import ensure_torchvision_importable

    assert ensure_torchvision_importable() in ("native", "shimmed")
    import open_clip as oc

    path = tmp_path_factory.mktemp("cfg") / f"{NAME}.json"
    path.write_text(json.dumps(TINY))
    oc.add_model_config(str(path))
    return oc


def _images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, size=(40 + 3 * i, 36, 3), dtype=np.uint8) for i in range(6)]
    path = tmp_path / "img.png"
    Image.fromarray(arrays[0]).save(path)
    gray = rng.integers(0, 256, size=(33, 33), dtype=np.uint8)
    return [*arrays, Image.fromarray(arrays[1]), path, gray]


def _reference(oc, model, preprocess, tokenizer, images):
    import torch

    from neurocert.dissect.clip_sources import _load_image

    batch = torch.stack([preprocess(_load_image(im, i)) for i, im in enumerate(images)])
    with torch.no_grad():
        img, txt, _ = model(batch, tokenizer(CONCEPTS))
    return (img @ txt.T).numpy()


def test_from_open_clip_equals_the_models_forward(open_clip, tmp_path):
    import torch

    from neurocert.dissect import clip

    images = _images(tmp_path)
    torch.manual_seed(0)
    with pytest.warns(NeurocertWarning, match="random weights"):
        cm = clip.from_open_clip(images, CONCEPTS, model=NAME, batch_size=4)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(NAME, pretrained=None)
    model.eval()
    want = _reference(open_clip, model, preprocess, open_clip.get_tokenizer(NAME), images)
    assert cm.values.shape == (len(images), len(CONCEPTS)) and cm.kind == "cosine"
    assert cm.concept_names == CONCEPTS and cm.source == f"open_clip:{NAME}"
    np.testing.assert_allclose(cm.values, want, atol=2e-6)
    assert np.abs(cm.values).max() <= 1 + 1e-6
    # a model object (same weights) with its own preprocess and tokenizer; batch size free
    cm2 = clip.from_open_clip(images, CONCEPTS, model=model, preprocess=preprocess,
                              tokenizer=open_clip.get_tokenizer(NAME), batch_size=64)
    np.testing.assert_allclose(cm2.values, cm.values, atol=2e-6)
    # a prompt template changes the texts
    cm3 = clip.from_open_clip(images, CONCEPTS, model=model, preprocess=preprocess,
                              tokenizer=open_clip.get_tokenizer(NAME),
                              template="a photo of {}.")
    assert not np.allclose(cm3.values, cm.values)


def test_open_clip_p_feeds_soft_wpmi_and_be(open_clip, tmp_path):
    import torch

    from neurocert.dissect import clip

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(40)]
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeurocertWarning)
        cm = clip.from_open_clip(images, CONCEPTS, model=NAME, batch_size=16)
    # neurons that read P's columns: soft-WPMI must find them
    act = np.asarray(cm.values[:, [3, 0, 1]], dtype=np.float64)
    sim = clip.concept_scores(act, cm, top_k=5, a=200.0, dtype="float64")
    assert sim.shape == (3, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NeurocertWarning)
        res = clip.clip_dissect_explain(act, cm, function="cos", n_boot=20, rng=0)
    assert res.identification.labels == ["sky", "dog", "red"]


@pytest.mark.filterwarnings("ignore::neurocert.exceptions.NeurocertWarning")
def test_from_open_clip_errors(open_clip, tmp_path):
    from neurocert.dissect import clip

    images = _images(tmp_path)[:2]
    with pytest.raises(ValidationError, match="needs `preprocess` and `tokenizer`"):
        clip.from_open_clip(images, CONCEPTS, model=object())
    with pytest.raises(ValidationError, match="sequence of strings"):
        clip.from_open_clip(images, "dog", model=NAME)
    with pytest.raises(ValidationError, match="cannot be read"):
        clip.from_open_clip([tmp_path / "missing.png"], CONCEPTS, model=NAME)
    with pytest.raises(ValidationError, match="uint8"):
        clip.from_open_clip([np.zeros((8, 8, 3))], CONCEPTS, model=NAME)


# --------------------------------------------------------------------------- shim
def test_shim_is_idempotent_and_open_clip_imports(open_clip):
    from neurocert import _torchvision_shim as shim

    first = shim.ensure_torchvision_importable()
    assert shim.ensure_torchvision_importable() == first
    # it only ever defines schemas when the native import failed with the known error
    assert (shim._STATE["library"] is not None) == (first == "shimmed")
    import torchvision.transforms  # noqa: F401


def _without_torchvision(monkeypatch):
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)


class _Raising:
    """A meta-path finder whose torchvision import raises ``error``."""

    def __init__(self, error):
        self.error = error

    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        import importlib.machinery

        finder = self

        class Loader:
            def create_module(self, spec):
                return None

            def exec_module(self, module):
                raise finder.error

        return importlib.machinery.ModuleSpec(name, Loader())


def test_shim_leaves_other_outcomes_alone(open_clip, monkeypatch):
    from neurocert import _torchvision_shim as shim

    before = shim._STATE["library"]
    _without_torchvision(monkeypatch)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # not installed
    assert shim.ensure_torchvision_importable() == "absent"
    monkeypatch.delitem(sys.modules, "torchvision")
    monkeypatch.setattr(sys, "meta_path", [_Raising(RuntimeError("another failure")),
                                           *sys.meta_path])
    with pytest.raises(RuntimeError, match="another failure"):
        shim.ensure_torchvision_importable()
    assert shim._STATE["library"] is before  # nothing defined
    # the known error after the schemas exist: re-raised, never defined twice
    monkeypatch.setattr(sys, "meta_path", [_Raising(RuntimeError(shim.SIGNATURE)),
                                           *sys.meta_path[1:]])
    monkeypatch.setitem(shim._STATE, "library", object())
    with pytest.raises(RuntimeError, match="does not exist"):
        shim.ensure_torchvision_importable()
