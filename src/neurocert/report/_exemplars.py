"""Top-activating samples for the report cards: image thumbnails with the activation
map overlaid, or text with the activating tokens highlighted.

An *exemplar provider* is any callable ``provider(neuron_index) -> list`` of
:class:`ImageExemplar` / :class:`TextExemplar`. :class:`ImageExemplars` and
:class:`TextExemplars` build one from arrays; the report encodes the images as
data URIs (JPEG through Pillow when it is installed, else PNG written here), so
the report stays one self-contained file.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import ValidationError

__all__ = ["ImageExemplar", "ImageExemplars", "TextExemplar", "TextExemplars",
           "encode_png", "image_data_uri", "mask_data_uri"]


@dataclass(frozen=True, eq=False)
class ImageExemplar:
    """One top-activating image of a neuron.

    Attributes
    ----------
    key : hashable
        Identifies the image (e.g. the sample index); equal keys share one
        embedded copy in the report.
    image : ndarray (height, width, 3) or (height, width), uint8
        The thumbnail.
    mask : ndarray (h, w) of floats in [0, 1], optional
        The neuron's activation map (any resolution; the browser scales it onto
        the thumbnail). Regions near 0 are darkened.
    caption : str
    """

    key: Any
    image: np.ndarray = field(repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)
    caption: str = ""


@dataclass(frozen=True, eq=False)
class TextExemplar:
    """One top-activating text of a neuron: tokens with weights in [0, 1]."""

    tokens: Sequence[str]
    weights: np.ndarray = field(repr=False)
    caption: str = ""


# --------------------------------------------------------------------------- #
# Encoding
# --------------------------------------------------------------------------- #

def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(
        ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode a uint8 image as PNG (no dependency beyond zlib).

    Parameters
    ----------
    pixels : ndarray (h, w) grey, (h, w, 2) grey + alpha, (h, w, 3) RGB or (h, w, 4) RGBA
    """
    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        raise ValidationError(f"PNG pixels must be uint8; got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValidationError(f"PNG pixels must be (h, w[, 1-4 channels]); got {np.shape(pixels)}")
    h, w, ch = a.shape
    color = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, w * ch)], axis=1)
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
            + _chunk(b"IEND", b""))


def _uint8_image(image: Any) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first -> last
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValidationError(f"an image must be (height, width[, 3]); got shape {a.shape}")
    if a.dtype.kind == "f":
        a = np.clip(np.nan_to_num(a) * (255.0 if a.max(initial=0) <= 1.0 else 1.0), 0, 255)
    return a.astype(np.uint8)


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """Shrink so that the longer side is ``size`` (area averaging; never enlarges)."""
    h, w = a.shape[:2]
    scale = size / max(h, w)
    if scale >= 1:
        return a
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    try:
        from PIL import Image

        return np.asarray(Image.fromarray(a).resize((nw, nh), Image.BILINEAR, reducing_gap=2.0))
    except ImportError:
        rows = (np.arange(nh) * h // nh)
        cols = (np.arange(nw) * w // nw)
        return a[rows][:, cols]


def image_data_uri(image: Any, *, size: int = 64, quality: int = 70) -> str:
    """``data:`` URI of a thumbnail: JPEG with Pillow installed, else PNG."""
    a = _resize(_uint8_image(image), size)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    try:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=int(quality), optimize=True)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except ImportError:
        return "data:image/png;base64," + base64.b64encode(encode_png(a)).decode("ascii")


def mask_data_uri(mask: Any, *, max_side: int = 32, shade: float = 0.7) -> str:
    """PNG ``data:`` URI of an overlay that darkens where ``mask`` is low.

    Black with alpha ``shade * (1 - mask)``: transparent where the neuron is most
    active. Masks larger than ``max_side`` are shrunk (the browser smooths it
    when it scales the overlay onto the thumbnail).
    """
    m = np.asarray(mask, dtype=np.float64)
    if m.ndim != 2:
        raise ValidationError(f"an activation mask must be (h, w); got shape {m.shape}")
    m = np.clip(np.nan_to_num(m), 0.0, 1.0)
    alpha = np.round(255 * shade * (1 - m)).astype(np.uint8)
    alpha = _resize(alpha, max_side)
    rgba = np.zeros(alpha.shape + (2,), np.uint8)
    rgba[:, :, 1] = alpha
    return "data:image/png;base64," + base64.b64encode(encode_png(rgba)).decode("ascii")


# --------------------------------------------------------------------------- #
# Providers
# --------------------------------------------------------------------------- #

def _nanmax0(a: np.ndarray) -> np.ndarray:
    """Column maxima ignoring NaN; NaN (no warning) where a column is all NaN."""
    m = np.max(np.where(np.isnan(a), -np.inf, a), axis=0)
    return np.where(np.isneginf(m) & np.isnan(a).all(axis=0), np.nan, m)


def _top_samples(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices (n_neurons, k) of each neuron's highest scores, descending; ties by index."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    n = s.shape[0]
    k = min(k, n)
    part = np.argpartition(-s, k - 1, axis=0)[:k] if k < n else np.arange(n)[:, None].repeat(
        s.shape[1], 1)
    vals = np.take_along_axis(s, part, axis=0)
    order = np.lexsort((part, -vals), axis=0)
    return np.take_along_axis(part, order, axis=0).T


class ImageExemplars:
    """The ``k`` most activating images of each neuron, with its activation map.

    Parameters
    ----------
    images : array (n_samples, height, width[, 3]) or callable
        The probing images (uint8, or floats in [0, 1]); a callable
        ``images(i) -> image`` loads sample ``i`` on demand.
    activations : array (n_samples, n_neurons) or (n_samples, n_neurons, h, w)
        Scores that rank the samples; with maps, the ranking score is the map's
        maximum and the map becomes the overlay.
    k : int
        Exemplars per neuron.
    maps : callable, optional
        ``maps(sample, neuron) -> (h, w)`` activation map, for 2-D ``activations``
        whose maps are too large to hold in memory (e.g. read from disk).
    threshold : float or array (n_neurons,), optional
        Binary overlay: show where the map exceeds the neuron's threshold
        (NetDissect's rule with its top-quantile threshold); default: the map
        scaled by its maximum over the neuron's exemplars.
    sample_names : sequence of str, optional
        Captions (default ``"sample i"``).
    """

    def __init__(self, images: Any, activations: Any, *, k: int = 4,
                 maps: Callable[[int, int], Any] | None = None, threshold: Any = None,
                 sample_names: Sequence[str] | None = None) -> None:
        acts = np.asarray(activations)
        if acts.ndim not in (2, 4):
            raise ValidationError(
                "`activations` must be (n_samples, n_neurons) or (n_samples, n_neurons, h, w); "
                f"got shape {acts.shape}")
        if not callable(images):
            imgs = np.asarray(images)
            if imgs.shape[0] != acts.shape[0]:
                raise ValidationError(
                    f"`images` has {imgs.shape[0]} samples (axis 0) but `activations` has "
                    f"{acts.shape[0]}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValidationError(f"`k` must be a positive integer; got {k!r}")
        self.images = images
        self.activations = acts
        scores = acts.reshape(acts.shape[0], acts.shape[1], -1).max(axis=2) if acts.ndim == 4 \
            else acts
        self.scores = np.asarray(scores, np.float64)
        self.top = _top_samples(self.scores, int(k))
        self.threshold = None if threshold is None else np.broadcast_to(
            np.asarray(threshold, np.float64), (acts.shape[1],))
        self.sample_names = sample_names
        if maps is not None and (acts.ndim == 4 or not callable(maps)):
            raise ValidationError("`maps` must be a callable (sample, neuron) -> (h, w), given "
                                  "with 2-D `activations`")
        self.maps = maps

    def _image(self, i: int) -> np.ndarray:
        return np.asarray(self.images(i) if callable(self.images) else self.images[i])

    def __call__(self, neuron: int) -> list[ImageExemplar]:
        idx = self.top[neuron]
        maps = None
        if self.activations.ndim == 4 or self.maps is not None:
            maps = (np.asarray(self.activations[idx, neuron], np.float64)
                    if self.maps is None else
                    np.stack([np.asarray(self.maps(int(i), int(neuron)), np.float64)
                              for i in idx]))
            if self.threshold is not None:
                maps = (maps > self.threshold[neuron]).astype(np.float64)
            else:
                scale = float(_nanmax0(maps.reshape(-1, 1))[0]) if maps.size else 0.0
                maps = (np.clip(np.nan_to_num(maps) / scale, 0, 1)
                        if np.isfinite(scale) and scale > 0 else np.zeros_like(maps))
        out = []
        for r, i in enumerate(idx):
            name = self.sample_names[i] if self.sample_names is not None else f"sample {i}"
            out.append(ImageExemplar(key=int(i), image=self._image(int(i)),
                                     mask=None if maps is None else maps[r],
                                     caption=f"{name}: {self.scores[i, neuron]:.3g}"))
        return out


class TextExemplars:
    """The ``k`` most activating texts of each neuron, activating tokens highlighted.

    Parameters
    ----------
    tokens : sequence (n_samples) of sequences of str
    activations : array (n_samples, n_neurons, n_tokens) or sequence of (n_tokens_i, n_neurons)
        Token activations; NaN pads shorter samples in the array form.
    k : int
        Exemplars per neuron.
    window : int
        Tokens shown around each exemplar's most active token.
    """

    def __init__(self, tokens: Sequence[Sequence[str]], activations: Any, *, k: int = 4,
                 window: int = 16) -> None:
        self.tokens = [list(map(str, t)) for t in tokens]
        if isinstance(activations, np.ndarray) and activations.ndim == 3:
            per = [activations[i, :, :len(self.tokens[i])].T for i in range(len(self.tokens))]
        else:
            per = [np.asarray(a, np.float64) for a in activations]
        if len(per) != len(self.tokens):
            raise ValidationError(
                f"`activations` has {len(per)} samples but `tokens` has {len(self.tokens)}")
        for i, (a, t) in enumerate(zip(per, self.tokens)):
            if a.ndim != 2 or a.shape[0] != len(t):
                raise ValidationError(
                    f"sample {i}: activations have shape {a.shape}; expected ({len(t)}, n_neurons)")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValidationError(f"`k` must be a positive integer; got {k!r}")
        self.per_sample = per
        n_neurons = per[0].shape[1] if per else 0
        self.scores = np.array([_nanmax0(a) if a.shape[0] else np.full(n_neurons, np.nan)
                                for a in per]).reshape(len(per), n_neurons)
        self.top = _top_samples(self.scores, int(k))
        self.window = int(window)

    def __call__(self, neuron: int) -> list[TextExemplar]:
        idx = self.top[neuron]
        peak = float(_nanmax0(self.scores[idx, neuron][:, None])[0]) if len(idx) else 0.0
        out = []
        for i in idx:
            a = self.per_sample[i][:, neuron]
            t = self.tokens[i]
            if not len(t):
                continue
            centre = int(np.nanargmax(np.where(np.isnan(a), -np.inf, a)))
            lo = max(0, centre - self.window // 2)
            hi = min(len(t), lo + self.window)
            w = (np.clip(np.nan_to_num(a[lo:hi]) / peak, 0, 1) if np.isfinite(peak) and peak > 0
                 else np.zeros(hi - lo))
            toks = (["\u2026"] if lo > 0 else []) + t[lo:hi] + (["\u2026"] if hi < len(t) else [])
            ws = np.concatenate([[0.0] if lo > 0 else [], w, [0.0] if hi < len(t) else []])
            out.append(TextExemplar(tokens=toks, weights=ws,
                                    caption=f"sample {i}: {self.scores[i, neuron]:.3g}"))
        return out


ExemplarProvider = Callable[[int], Sequence[ImageExemplar | TextExemplar]]
