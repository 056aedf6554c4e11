"""Sample-level probing sets: samples with a multi-hot concept matrix.

:class:`ProbingSet` is what the image-folder, array and text readers return:
``samples`` (images, arrays or strings), ``concepts`` ``(n_samples,
n_concepts)`` ``bool``, the concept names and, optionally, ``groups`` (the
independent unit a sample belongs to, e.g. a sentence or a source image).
:class:`TokenProbingSet` holds token-level labels with the sentence as the
group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import ValidationError

__all__ = ["ProbingSet", "TokenProbingSet", "multi_hot"]


def multi_hot(labels: Sequence[Iterable[Any]], *, concept_names: Sequence[str] | None = None,
              what: str = "labels") -> tuple[np.ndarray, tuple[str, ...]]:
    """Turn per-sample label lists into a ``bool`` multi-hot matrix.

    Parameters
    ----------
    labels : sequence of iterables
        Per sample, its concept names (``str``) or concept indices (``int``,
        only with ``concept_names``). A bare string is one label.
    concept_names : sequence of str, optional
        The concepts, in column order. Default: the sorted distinct names.
    what : str
        How to name the input in error messages.

    Returns
    -------
    concepts : ndarray
        ``bool`` ``(n_samples, n_concepts)``.
    names : tuple of str

    Raises
    ------
    ValidationError
        A name not in ``concept_names``, an index out of range, an integer
        label without ``concept_names``, or repeated ``concept_names``.
    """
    rows = [[lab] if isinstance(lab, (str, int, np.integer)) else list(lab or []) for lab in labels]
    if concept_names is None:
        ints = [v for r in rows for v in r if not isinstance(v, str)]
        if ints:
            raise ValidationError(
                f"{what} holds non-string label {ints[0]!r}; pass `concept_names` to use integer indices")
        names = tuple(sorted({v for r in rows for v in r}))
    else:
        names = tuple(str(n) for n in concept_names)
        if len(set(names)) != len(names):
            raise ValidationError("`concept_names` has repeated names")
    index = {n: k for k, n in enumerate(names)}
    out = np.zeros((len(rows), len(names)), dtype=bool)
    for i, r in enumerate(rows):
        for v in r:
            if isinstance(v, str):
                k = index.get(v)
                if k is None:
                    raise ValidationError(f"{what}[{i}]: label {v!r} is not in `concept_names`")
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                k = int(v)
                if not 0 <= k < len(names):
                    raise ValidationError(f"{what}[{i}]: label index {k} is not in [0, {len(names)})")
            else:
                raise ValidationError(f"{what}[{i}]: label {v!r} must be a string or an integer")
            out[i, k] = True
    return out, names


def _check_concepts(concepts: Any, n: int, names: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    c = np.asarray(concepts)
    if c.ndim != 2 or c.shape[0] != n:
        raise ValidationError(f"`concepts` must have shape ({n}, n_concepts); got {c.shape}")
    if c.dtype != bool:
        if not np.isin(c, (0, 1)).all():
            raise ValidationError("`concepts` must be a 0/1 (multi-hot) matrix")
        c = c.astype(bool)
    if names is None:
        names = [str(k) for k in range(c.shape[1])]
    names = tuple(str(v) for v in names)
    if len(names) != c.shape[1]:
        raise ValidationError(f"`concept_names` has {len(names)} names but `concepts` has {c.shape[1]} columns")
    return c, names


@dataclass(frozen=True, eq=False)
class ProbingSet:
    """Samples with sample-level concept labels.

    Attributes
    ----------
    samples : ndarray or list
        ``(n_samples, ...)`` array (images ``uint8`` ``(n, h, w, 3)``, feature
        arrays) or a list (strings, or images of different sizes).
    concepts : ndarray
        ``bool`` ``(n_samples, n_concepts)``.
    concept_names : tuple of str
    groups : ndarray or None
        ``int64`` ``(n_samples,)``: the independent unit of each sample.
    ids : tuple of str or None
        Per sample, where it came from (a file path, a line number).
    skipped : tuple of (str, str)
        Inputs that could not be read and were left out: ``(id, reason)``.
    """

    samples: Any
    concepts: np.ndarray
    concept_names: tuple[str, ...]
    groups: np.ndarray | None = None
    ids: tuple[str, ...] | None = None
    skipped: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.samples)
        c, names = _check_concepts(self.concepts, n, self.concept_names)
        object.__setattr__(self, "concepts", c)
        object.__setattr__(self, "concept_names", names)
        if self.groups is not None:
            g = np.asarray(self.groups)
            if g.shape != (n,) or not np.issubdtype(g.dtype, np.integer):
                raise ValidationError(f"`groups` must be integers of shape ({n},); got {g.dtype} {g.shape}")
            object.__setattr__(self, "groups", g.astype(np.int64))
        if self.ids is not None and len(self.ids) != n:
            raise ValidationError(f"`ids` has {len(self.ids)} entries for {n} samples")

    @property
    def n_skipped(self) -> int:
        """How many inputs were skipped as unreadable."""
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        kind = type(self.samples).__name__
        extra = f", skipped={self.n_skipped}" if self.skipped else ""
        return (f"ProbingSet(n_samples={len(self)}, n_concepts={len(self.concept_names)}, samples={kind}"
                f"{', grouped' if self.groups is not None else ''}{extra})")


@dataclass(frozen=True, eq=False)
class TokenProbingSet:
    """Tokens with token-level concept labels, grouped by sentence.

    Attributes
    ----------
    texts : list of str
        The sentences.
    tokens : list of str
        All tokens, sentence after sentence (``n_tokens``).
    groups : ndarray
        ``int64`` ``(n_tokens,)``: the sentence of each token.
    spans : ndarray
        ``int64`` ``(n_tokens, 2)``: start and end character offsets of each
        token in its sentence (for aligning a model's sub-word tokens).
    concepts : ndarray
        ``bool`` ``(n_tokens, n_concepts)``.
    concept_names : tuple of str
    """

    texts: list[str]
    tokens: list[str]
    groups: np.ndarray
    spans: np.ndarray
    concepts: np.ndarray
    concept_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.tokens)
        c, names = _check_concepts(self.concepts, n, self.concept_names)
        object.__setattr__(self, "concepts", c)
        object.__setattr__(self, "concept_names", names)
        g = np.asarray(self.groups, dtype=np.int64)
        if g.shape != (n,) or (n and (g.min() < 0 or g.max() >= len(self.texts))):
            raise ValidationError(f"`groups` must be ({n},) sentence indices in [0, {len(self.texts)})")
        object.__setattr__(self, "groups", g)
        s = np.asarray(self.spans, dtype=np.int64)
        if s.shape != (n, 2):
            raise ValidationError(f"`spans` must have shape ({n}, 2); got {s.shape}")
        object.__setattr__(self, "spans", s)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return (f"TokenProbingSet(n_tokens={len(self)}, n_sentences={len(self.texts)}, "
                f"n_concepts={len(self.concept_names)})")

    def sentence_concepts(self) -> np.ndarray:
        """``bool`` ``(n_sentences, n_concepts)``: whether any token of the sentence has the concept."""
        out = np.zeros((len(self.texts), len(self.concept_names)), dtype=bool)
        np.logical_or.at(out, self.groups, self.concepts)
        return out
