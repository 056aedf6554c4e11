"""Text corpora with sentence-level or token-level concept labels.

Sentence level: a list of strings with per-string label lists (or a 0/1
matrix), or a JSONL file with one object per line, e.g.
``{"text": "A dog barked.", "labels": ["animal", "sound"]}``.

Token level: JSONL (or a list of dicts) like
``{"text": "A dog barked.", "tokens": ["A", "dog", "barked", "."],
"labels": [[], ["NOUN", "animal"], ["VERB"], []]}``: one label list (or a
single string, or ``null``) per token; the sentence is the group of its tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ValidationError
from .probing import ProbingSet, TokenProbingSet, multi_hot

__all__ = ["load_text_corpus", "load_token_corpus", "read_jsonl"]


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file (blank lines ignored); each line must be an object."""
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"JSONL file {str(p)!r} does not exist")
    out = []
    with open(p, encoding="utf-8") as fh:
        for k, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{p.name}, line {k}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ValidationError(f"{p.name}, line {k}: expected a JSON object, got {type(obj).__name__}")
            obj["_line"] = k
            out.append(obj)
    return out


def _records(source: Any) -> tuple[list[Mapping[str, Any]], str]:
    if isinstance(source, (str, os.PathLike)):
        return read_jsonl(source), Path(source).name
    return list(source), "records"


def load_text_corpus(source: str | os.PathLike[str] | Sequence[Any], labels: Any = None, *,
                     concept_names: Sequence[str] | None = None, text_key: str = "text",
                     labels_key: str = "labels", group_key: str | None = None) -> ProbingSet:
    """A text corpus with sentence-level concept labels.

    Parameters
    ----------
    source : path or sequence
        A JSONL file, a sequence of dicts (read like JSONL lines), or a
        sequence of strings (then ``labels`` gives the labels).
    labels : sequence of label lists or array-like, optional
        With strings: per string its concept names (or indices with
        ``concept_names``), or a 0/1 matrix ``(n_texts, n_concepts)`` given
        as an array.
    concept_names : sequence of str, optional
        Column order; default the sorted distinct names (or ``"0", "1", ...``
        for a matrix).
    text_key, labels_key : str
        Field names in JSONL records.
    group_key : str, optional
        A record field whose value names the sample's group (e.g. a document
        id); groups are numbered in order of first appearance.

    Returns
    -------
    ProbingSet
        ``samples`` is the list of texts; ``ids`` are JSONL line numbers.

    Raises
    ------
    ValidationError
        Missing fields, non-string texts, label/text count mismatch, unknown
        label names.

    Examples
    --------
    >>> ps = load_text_corpus(["a dog", "a cat and a dog"], [["dog"], ["cat", "dog"]])
    >>> ps.concept_names, ps.concepts.astype(int).tolist()
    (('cat', 'dog'), [[0, 1], [1, 1]])
    """
    if isinstance(source, (str, os.PathLike)) or (len(source) and isinstance(source[0], Mapping)):
        if labels is not None:
            raise ValidationError("`labels` is only for a sequence of strings; JSONL records carry their labels")
        recs, where = _records(source)
        texts, labs, groups = [], [], []
        for k, r in enumerate(recs):
            line = r.get("_line", k)
            if text_key not in r or not isinstance(r[text_key], str):
                raise ValidationError(f"{where}, record {line}: needs a string field {text_key!r}")
            texts.append(r[text_key])
            labs.append(r.get(labels_key) or [])
            if group_key is not None:
                if group_key not in r:
                    raise ValidationError(f"{where}, record {line}: lacks the group field {group_key!r}")
                groups.append(str(r[group_key]))
        concepts, names = multi_hot(labs, concept_names=concept_names, what=f"{where} labels")
        ids = tuple(str(r.get("_line", k)) for k, r in enumerate(recs))
        g = None
        if group_key is not None:
            first = {v: j for j, v in reversed(list(enumerate(dict.fromkeys(groups))))}
            g = np.array([first[v] for v in groups], dtype=np.int64)
        return ProbingSet(samples=texts, concepts=concepts, concept_names=names, groups=g, ids=ids)
    texts = list(source)
    bad = [k for k, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValidationError(f"texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, not a string")
    if labels is None:
        raise ValidationError("`labels` is required with a sequence of strings")
    if getattr(labels, "ndim", None) == 2:  # a 0/1 matrix (numpy array or array-like with ndim)
        arr = np.asarray(labels)
        if arr.shape[0] != len(texts):
            raise ValidationError(f"`labels` has {arr.shape[0]} rows but there are {len(texts)} texts")
        return ProbingSet(samples=texts, concepts=arr, concept_names=concept_names)
    if len(labels) != len(texts):
        raise ValidationError(f"`labels` has {len(labels)} entries but there are {len(texts)} texts")
    concepts, names = multi_hot(labels, concept_names=concept_names)
    return ProbingSet(samples=texts, concepts=concepts, concept_names=names)


def _spans(text: str, tokens: Sequence[str], where: str) -> list[tuple[int, int]]:
    out, pos = [], 0
    for t in tokens:
        j = text.find(t, pos)
        if j < 0:
            raise ValidationError(f"{where}: token {t!r} not found in the text after offset {pos}")
        out.append((j, j + len(t)))
        pos = j + len(t)
    return out


def load_token_corpus(source: str | os.PathLike[str] | Iterable[Mapping[str, Any]], *,
                      concept_names: Sequence[str] | None = None, text_key: str = "text",
                      tokens_key: str = "tokens", labels_key: str = "labels") -> TokenProbingSet:
    """A corpus with token-level concept labels; the sentence is the group.

    Parameters
    ----------
    source : path or iterable of dicts
        JSONL file or records with ``tokens`` (list of str), ``labels`` (one
        entry per token: a list of concept names, a single name, or null) and
        optionally ``text`` (default: the tokens joined by spaces).
    concept_names : sequence of str, optional
        Column order; default the sorted distinct names.
    text_key, tokens_key, labels_key : str
        Field names.

    Returns
    -------
    TokenProbingSet
        ``spans`` locate each token in its text (tokens are searched left to
        right, so they must occur in order).

    Raises
    ------
    ValidationError
        Missing fields, a label list of another length than the tokens, a
        token absent from the text, unknown label names.
    """
    recs, where = _records(source)
    texts: list[str] = []
    tokens: list[str] = []
    labs: list[Any] = []
    groups: list[int] = []
    spans: list[tuple[int, int]] = []
    for k, r in enumerate(recs):
        at = f"{where}, record {r.get('_line', k)}"
        toks = r.get(tokens_key)
        if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
            raise ValidationError(f"{at}: {tokens_key!r} must be a list of strings")
        tl = r.get(labels_key)
        if not isinstance(tl, list) or len(tl) != len(toks):
            raise ValidationError(
                f"{at}: {labels_key!r} must be a list with one entry per token ({len(toks)}); "
                f"got {type(tl).__name__} of length {len(tl) if isinstance(tl, list) else '-'}")
        text = r.get(text_key, " ".join(toks))
        if not isinstance(text, str):
            raise ValidationError(f"{at}: {text_key!r} must be a string")
        spans.extend(_spans(text, toks, at))
        groups.extend([len(texts)] * len(toks))
        texts.append(text)
        tokens.extend(toks)
        labs.extend(tl)
    concepts, names = multi_hot(labs, concept_names=concept_names, what=f"{where} token labels")
    return TokenProbingSet(texts=texts, tokens=tokens, groups=np.asarray(groups, np.int64),
                           spans=np.asarray(spans, np.int64).reshape(-1, 2), concepts=concepts,
                           concept_names=names)
