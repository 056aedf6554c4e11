"""Sources of the concept-activation matrix P of CLIP-Dissect-style labelling.

``P (n_samples, n_concepts)`` says how strongly each probing sample shows each concept.
It comes in two kinds:

* ``"cosine"``: image–text cosine similarities (CLIP-Dissect's ``clip_feats``). soft-WPMI
  and WPMI turn each row into ``P(d|x) = softmax(a cos)`` over the concepts; rank-reorder
  and the cosine functions read the cosines themselves.
* ``"probability"``: ``P(d|x)`` in [0, 1] given directly — ground-truth concept labels
  (binary or soft) or a classifier's class probabilities. Every function reads the
  values as they are (no softmax).

:func:`from_open_clip` computes cosines with an open_clip image–text model; the others
wrap arrays the user already has.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._optional import require
from .._progress import progress
from .._validation import check_names, to_numpy
from ..exceptions import NeurocertWarning, ValidationError

__all__ = ["KINDS", "ConceptMatrix", "as_concept_matrix", "from_classifier", "from_labels",
           "from_open_clip", "from_precomputed"]

KINDS = ("cosine", "probability")
#: float32 cosines of unit vectors may exceed 1 by a few ulps
COSINE_SLACK = 1e-4


@dataclass(frozen=True, eq=False)
class ConceptMatrix:
    """The concept-activation matrix P with its kind, concept names and provenance.

    Attributes
    ----------
    values : ndarray (n_samples, n_concepts)
    kind : {"cosine", "probability"}
        See the module notes.
    concept_names : list of str
    source : str
        ``"open_clip:<model>"``, ``"precomputed"``, ``"labels"`` or ``"classifier"``.
    parameters : dict
        How P was made (model, checkpoint, prompt template, ...).
    """

    values: np.ndarray = field(repr=False)
    kind: str
    concept_names: list[str] = field(repr=False)
    source: str
    parameters: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_samples(self) -> int:
        return self.values.shape[0]

    @property
    def n_concepts(self) -> int:
        return self.values.shape[1]

    def __repr__(self) -> str:
        return (f"ConceptMatrix(kind={self.kind!r}, source={self.source!r}, "
                f"n_samples={self.n_samples}, n_concepts={self.n_concepts})")


def _dense_2d(x: Any, name: str) -> np.ndarray:
    v = np.asarray(x.toarray()) if sp.issparse(x) else to_numpy(x, name)
    if v.ndim != 2:
        raise ValidationError(f"`{name}` must be 2-D (n_samples, n_concepts); got shape {v.shape}")
    if v.shape[0] == 0 or v.shape[1] == 0:
        raise ValidationError(f"`{name}` must have samples and concepts; got shape {v.shape}")
    if v.dtype.kind in "biu":
        v = v.astype(np.float64)
    elif v.dtype == np.float16:
        v = v.astype(np.float32)
    elif v.dtype.kind != "f":
        raise ValidationError(f"`{name}` must be numeric; got dtype {v.dtype}")
    if not np.isfinite(v).all():
        pos = tuple(int(i) for i in np.argwhere(~np.isfinite(v))[0])
        raise ValidationError(f"`{name}` contains a non-finite value ({v[pos]!r}) at position {pos}")
    return v


def _check_range(v: np.ndarray, name: str, lo: float, hi: float) -> None:
    bad = (v < lo) | (v > hi)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValidationError(
            f"`{name}` values must lie in [{lo:g}, {hi:g}]; found {v[pos]!r} at position {pos}")


def from_precomputed(values: Any, *, kind: str = "cosine",
                     concept_names: Sequence[str] | None = None) -> ConceptMatrix:
    """Wrap a precomputed P.

    Parameters
    ----------
    values : array-like (n_samples, n_concepts)
        Image–text cosines (``kind="cosine"``, in [-1, 1]) or probabilities
        ``P(d|x)`` (``kind="probability"``, in [0, 1]).
    kind : {"cosine", "probability"}
    concept_names : sequence of str, optional

    Returns
    -------
    ConceptMatrix

    Examples
    --------
    >>> import numpy as np
    >>> from neurocert.dissect.clip import from_precomputed
    >>> from_precomputed(np.array([[0.3, 0.1], [0.2, 0.25]]), concept_names=["dog", "cat"])
    ConceptMatrix(kind='cosine', source='precomputed', n_samples=2, n_concepts=2)
    """
    if kind not in KINDS:
        raise ValidationError(f"`kind` must be one of {KINDS}; got {kind!r}")
    v = _dense_2d(values, "values")
    if kind == "cosine":
        _check_range(v, "values", -1 - COSINE_SLACK, 1 + COSINE_SLACK)
    else:
        _check_range(v, "values", 0.0, 1.0)
    names = check_names(concept_names, v.shape[1], "concept")
    return ConceptMatrix(v, kind, names, "precomputed", {"kind": kind})


def from_labels(labels: Any, *, concept_names: Sequence[str] | None = None) -> ConceptMatrix:
    """P from ground-truth concept labels, binary or soft, used as ``P(d|x)`` directly.

    soft-WPMI on this P is "soft-WPMI on ground-truth P", not CLIP-Dissect: no
    image–text model is involved.

    Parameters
    ----------
    labels : array-like or scipy.sparse (n_samples, n_concepts), values in [0, 1]
    concept_names : sequence of str, optional
    """
    v = _dense_2d(labels, "labels")
    _check_range(v, "labels", 0.0, 1.0)
    names = check_names(concept_names, v.shape[1], "concept")
    return ConceptMatrix(v, "probability", names, "labels", {})


def from_classifier(probabilities: Any = None, *, logits: Any = None,
                    concept_names: Sequence[str] | None = None) -> ConceptMatrix:
    """P from a classifier's class probabilities (or its logits, turned into a softmax).

    Parameters
    ----------
    probabilities : array-like (n_samples, n_classes), optional
        Rows in [0, 1] (a softmax output).
    logits : array-like (n_samples, n_classes), optional
        Give exactly one of ``probabilities`` and ``logits``.
    concept_names : sequence of str, optional
        Class names.
    """
    if (probabilities is None) == (logits is None):
        raise ValidationError("give exactly one of `probabilities` and `logits`")
    if logits is not None:
        z = _dense_2d(logits, "logits").astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        v = np.exp(z)
        v /= v.sum(axis=1, keepdims=True)
        params: dict[str, Any] = {"from": "logits"}
    else:
        v = _dense_2d(probabilities, "probabilities")
        _check_range(v, "probabilities", 0.0, 1.0)
        params = {"from": "probabilities"}
    names = check_names(concept_names, v.shape[1], "concept")
    return ConceptMatrix(v, "probability", names, "classifier", params)


def as_concept_matrix(concepts: Any, kind: str | None) -> ConceptMatrix:
    """A :class:`ConceptMatrix` as is, or an array wrapped with an explicit ``kind``."""
    if isinstance(concepts, ConceptMatrix):
        if kind is not None and kind != concepts.kind:
            raise ValidationError(
                f"`kind`={kind!r} contradicts the ConceptMatrix's kind {concepts.kind!r}")
        return concepts
    if kind is None:
        raise ValidationError(
            "`concepts` is a plain array: say what it holds with kind='cosine' (image–text "
            "cosines; soft-WPMI applies softmax(a cos)) or kind='probability' (P(d|x) used as "
            "is, e.g. ground-truth labels), or pass a ConceptMatrix (from_open_clip, "
            "from_labels, from_classifier, from_precomputed)")
    return from_precomputed(concepts, kind=kind)


# --------------------------------------------------------------------------- open_clip
def _load_image(item: Any, index: int):
    from PIL import Image

    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as im:
                return im.convert("RGB")
        except OSError as exc:
            raise ValidationError(f"image {index} ({os.fspath(item)!r}) cannot be read: {exc}") \
                from exc
    arr = to_numpy(item, f"images[{index}]")
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4)):
        if arr.dtype != np.uint8:
            raise ValidationError(
                f"image {index} is an array of dtype {arr.dtype}; give uint8 pixels (H, W[, C])")
        return Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[2] == 1
                               else arr).convert("RGB")
    raise ValidationError(
        f"image {index} must be a PIL image, a file path or a uint8 array (H, W[, C]); "
        f"got {type(item).__name__} of shape {getattr(arr, 'shape', None)}")


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValidationError("the model returned an all-zero embedding; cosines are undefined")
    return x / norm


def from_open_clip(images: Sequence[Any], concepts: Sequence[str], *,
                   model: Any = "ViT-B-32", pretrained: str | None = None,
                   preprocess: Any = None, tokenizer: Any = None, template: str = "{}",
                   batch_size: int = 64, device: str = "cpu",
                   progress_bar: bool = False) -> ConceptMatrix:
    """Image–text cosines ``P[i, d] = cos(image_i, text_d)`` from an open_clip model.

    Each image goes through the model's own preprocessing and ``encode_image``; each
    concept through ``template.format(concept)``, the model's tokenizer and
    ``encode_text``; both embeddings are L2-normalised and P is their inner product
    (CLIP-Dissect's ``clip_feats``; its concept texts use no template: ``"{}"``).

    Parameters
    ----------
    images : sequence of PIL images, file paths or uint8 arrays (H, W[, C])
        The probing set, in the order of the activations.
    concepts : sequence of str
        Concept words or phrases; they also become the concept names.
    model : str or torch module
        An open_clip model name (``open_clip.list_models()``, or one registered with
        ``open_clip.add_model_config``), or a model object with ``encode_image`` and
        ``encode_text`` (then give ``preprocess`` and ``tokenizer``).
    pretrained : str, optional
        open_clip pretrained tag or a local checkpoint file. ``None`` gives randomly
        initialised weights (for tests only: P is then meaningless), with a warning.
        Nothing is downloaded when this is a local file.
    preprocess, tokenizer : callable, optional
        Override the model's image transform and tokenizer.
    template : str
        Prompt with one ``{}`` for the concept.
    batch_size : int
    device : str
        ``"cpu"`` or ``"cuda"``.
    progress_bar : bool

    Returns
    -------
    ConceptMatrix
        ``kind="cosine"``, float32 values in [-1, 1].

    Notes
    -----
    torch and open_clip are imported here (``pip install 'neurocert[clip]'``); PyPI's
    torchvision beside the CPU build of torch is repaired first by
    :func:`neurocert._torchvision_shim.ensure_torchvision_importable` where (and only
    where) its import fails.
    """
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
            or batch_size < 1:
        raise ValidationError(f"`batch_size` must be a positive integer; got {batch_size!r}")
    if isinstance(concepts, str):
        raise ValidationError("`concepts` must be a sequence of strings, not one string")
    texts = [str(c) for c in concepts]
    if not texts:
        raise ValidationError("`concepts` is empty")
    if "{}" not in template:
        raise ValidationError(f"`template` must contain '{{}}' for the concept; got {template!r}")
    n = len(images)
    if n == 0:
        raise ValidationError("`images` is empty; the probing set has no samples")
    torch = require("torch", "from_open_clip()")
    from .._torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()
    open_clip = require("open_clip", "from_open_clip()")
    name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        if pretrained is None:
            warnings.warn(
                f"from_open_clip: model {model!r} with pretrained=None has random weights; its "
                "P carries no meaning (use it for tests only)", NeurocertWarning, stacklevel=2)
        net, _, default_preprocess = open_clip.create_model_and_transforms(
            model, pretrained=pretrained, device=device)
        preprocess = default_preprocess if preprocess is None else preprocess
        tokenizer = open_clip.get_tokenizer(model) if tokenizer is None else tokenizer
    else:
        if preprocess is None or tokenizer is None:
            raise ValidationError("a model object needs `preprocess` and `tokenizer`")
        if not (hasattr(model, "encode_image") and hasattr(model, "encode_text")):
            raise ValidationError("`model` must be an open_clip model name or have "
                                  "encode_image() and encode_text()")
        net = model.to(device)
    net.eval()
    with torch.no_grad():
        chunks = []
        for t0 in range(0, len(texts), batch_size):
            tokens = tokenizer([template.format(t) for t in texts[t0:t0 + batch_size]])
            chunks.append(net.encode_text(tokens.to(device)).float().cpu().numpy())
        text_f = _normalise(np.concatenate(chunks))
        chunks = []
        starts = range(0, n, batch_size)
        for s0 in progress(starts, total=len(starts), desc="open_clip", enabled=progress_bar):
            batch = torch.stack([preprocess(_load_image(images[i], i))
                                 for i in range(s0, min(n, s0 + batch_size))])
            chunks.append(net.encode_image(batch.to(device)).float().cpu().numpy())
        image_f = _normalise(np.concatenate(chunks))
    values = (image_f @ text_f.T).astype(np.float32)
    return ConceptMatrix(values, "cosine", texts, f"open_clip:{name}",
                         {"model": name, "pretrained": None if pretrained is None
                          else os.fspath(pretrained), "template": template})
