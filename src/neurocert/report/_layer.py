"""One layer's results, several methods: the tidy (neuron, concept) table and verdicts.

:class:`LayerResults` gathers the results of one or more methods run on one
layer (for example NetDissect-style IoU and soft-WPMI, each an
:class:`~neurocert.ExplanationResult` or an :class:`~neurocert.IdentificationResult`),
certifies every neuron's label at a chosen level with a stated multiplicity
correction, and keeps two tables:

* ``pairs``, the **tidy table**: one row per (method, neuron, concept) for the
  concepts in any set (bootstrap, split, certified) and the ``top_k`` by
  similarity, with the similarity, its simultaneous confidence limits, the
  null baseline, the selection probability and its standard error, set
  memberships and sizes, and the run's metric, n, groups count, delta, alpha,
  multiplicity and method name;
* ``neurons``: one row per (method, neuron) with the label, its certificate and
  a plain-language verdict.

Both are plain dicts of 1-D numpy columns; :meth:`LayerResults.to_frame` and
:meth:`LayerResults.neuron_frame` turn them into pandas frames.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..exceptions import SchemaError, ValidationError
from ..explanation import ExplanationResult
from ..identify import MULTIPLICITY, IdentificationResult, rank_concepts

__all__ = [
    "KIND",
    "NEURON_COLUMNS",
    "NONE_NAME",
    "PAIR_COLUMNS",
    "VERDICTS",
    "LayerResults",
    "MethodSummary",
    "load_result",
]

#: ``manifest["kind"]`` of a saved :class:`LayerResults`.
KIND = "layer_results"
#: Concept name used for the "none" outcome (no concept above the metric's minimum).
NONE_NAME = "(none)"
#: Verdict codes, from best to worst.
VERDICTS = ("stable", "unstable", "not_certified", "none")

#: Columns of the tidy table, in order.
PAIR_COLUMNS = (
    "method", "neuron_index", "neuron", "concept_index", "concept", "rank", "is_label",
    "similarity", "lower", "upper", "null", "boot_low", "boot_high", "probability",
    "probability_se", "in_bootstrap_set", "in_split_set", "in_certified_set", "in_top_k",
    "bootstrap_set_size", "split_set_size", "certified_set_size", "label_certified",
    "metric", "n_samples", "n_groups", "delta", "alpha", "level", "multiplicity", "n_boot",
)
#: Columns of the per-neuron table, in order.
NEURON_COLUMNS = (
    "method", "neuron_index", "neuron", "label", "concept_index", "similarity", "lower",
    "upper", "null", "regret_bound", "certified", "p_value", "set_size", "bootstrap_set_size",
    "split_set_size", "certified_set_size", "mode_frequency", "agreement", "entropy",
    "none_probability", "self_in_set", "verdict", "verdict_text",
)
_STR_COLUMNS = {"method", "neuron", "concept", "metric", "multiplicity", "label", "verdict",
                "verdict_text"}


def _obj(values: Sequence[str]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = [str(v) for v in values]
    return out


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (floats, arrays, containers)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or (a.dtype.kind == "O") != (b.dtype.kind == "O"):
            return False
        if a.dtype.kind == "f" and b.dtype.kind == "f":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


# --------------------------------------------------------------------------- #
# Per-method summary
# --------------------------------------------------------------------------- #

@dataclass(frozen=True, eq=False)
class MethodSummary:
    """What one method ran and how many of its labels are certified.

    Attributes
    ----------
    name : str
        Method name (e.g. ``"netdissect"``, ``"soft_wpmi"``).
    kind : {"explanation", "identification"}
        Whether a bootstrap ensemble ran (explanation) or only the certificate.
    metric : str
    n_neurons, n_concepts, n_samples : int
    n_groups : float
        Independent units the bounds count (groups when samples are grouped,
        else ``n_samples``).
    delta : float
        Failure probability of the confidence limits.
    alpha : float
        Miscoverage of the prediction sets (NaN without a bootstrap).
    n_boot : int
        Bootstrap replicates (0 without a bootstrap).
    mode : str
        ``"bootstrap"``, ``"split"``, ``"both"``, or ``""`` without a bootstrap.
    coverage_target : str
        What the prediction set covers.
    level : float
        A label is certified when its lower limit exceeds ``level`` ...
    multiplicity : {"none", "fwer", "fdr"}
        ... with this correction over the neurons.
    n_certified : int
        Neurons with a certified label.
    guarantee : str
        The statement the multiplicity choice makes.
    expected_false : float
        Bound on the expected number of false certifications (``delta *
        n_neurons`` for ``"none"``; NaN where the guarantee is not a bound in
        expectation on the count, see ``guarantee``).
    n_layer_neurons : int
        Neurons the certification ran over (> ``n_neurons`` after :meth:`LayerResults.select`).
    """

    name: str
    kind: str
    metric: str
    n_neurons: int
    n_concepts: int
    n_samples: int
    n_groups: float
    delta: float
    alpha: float
    n_boot: int
    mode: str
    coverage_target: str
    level: float
    multiplicity: str
    n_certified: int
    guarantee: str
    expected_false: float
    n_layer_neurons: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MethodSummary):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # type: ignore[assignment]

    @property
    def set_label(self) -> str:
        """``"95% set"`` for alpha = 0.05; ``"certified set"`` without a bootstrap."""
        if self.kind != "explanation":
            return "certified set"
        return f"{100 * (1 - self.alpha):.4g}% set"

    def statement(self) -> str:
        """One sentence: how many labels are certified, at which level, with which guarantee."""
        sel = (f" (of the {self.n_layer_neurons} neurons certified together)"
               if self.n_layer_neurons != self.n_neurons else "")
        text = (f"{self.n_certified} of {self.n_neurons} neurons{sel} have a certified label "
                f"(lower limit > {self.level:g}, delta={self.delta:g}, "
                f"multiplicity={self.multiplicity}): {self.guarantee}")
        if self.multiplicity == "fdr" and self.n_certified:
            text += (f"; with {self.n_certified} certified that is about "
                     f"{self.delta * self.n_certified:.3g} false labels on average")
        return text


# --------------------------------------------------------------------------- #
# Building the tables of one method
# --------------------------------------------------------------------------- #

def _set_pairs(sets: Sequence[np.ndarray], n: int, c: int) -> np.ndarray:
    """Keys ``neuron * (c + 1) + column`` of set members ("none" is column ``c``)."""
    lens = np.fromiter((len(s) for s in sets), np.int64, count=n)
    if not lens.sum():
        return np.zeros(0, np.int64)
    members = np.concatenate([np.asarray(s, np.int64) for s in sets])
    members = np.where(members < 0, c, members)
    return np.repeat(np.arange(n, dtype=np.int64), lens) * (c + 1) + members


def _summary(ident: IdentificationResult, name: str, level: float, multiplicity: str):
    try:
        return ident.summary(level, multiplicity=multiplicity)
    except ValidationError as exc:
        raise ValidationError(
            f"method {name!r}: multiplicity={multiplicity!r} needs per-neuron p-values, which "
            "need the probing data; build the LayerResults from results computed in this "
            "session (identify / bootstrap_explain), or use multiplicity='none' with results "
            f"loaded from disk ({exc})") from None


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.3g}"


def _verdicts(kind: str, best: np.ndarray, lower: np.ndarray, certified: np.ndarray,
              set_size: np.ndarray, single_is_none: np.ndarray, level: float,
              set_label: str) -> tuple[np.ndarray, np.ndarray]:
    """Verdict code and plain-language verdict of every neuron."""
    code = np.where(best < 0, "none", np.where(
        ~certified, "not_certified",
        np.where((set_size == 1) & ~single_is_none, "stable", "unstable")))
    texts = []
    for j in range(len(best)):
        if best[j] < 0:
            texts.append("no concept scores above the metric's minimum")
            continue
        if set_size[j] == 1 and not single_is_none[j]:
            stab = (f"stable: one concept in the {set_label}" if kind == "explanation"
                    else "one concept in the certified set")
        elif set_size[j] == 1:
            stab = f"unstable: the {set_label} holds only '{NONE_NAME}'"
        else:
            stab = (f"unstable: {set_size[j]} concepts in the {set_label}"
                    if kind == "explanation"
                    else f"ambiguous: {set_size[j]} concepts in the certified set")
        if not np.isfinite(lower[j]):
            cert = "not certified: no confidence bound for this metric"
        elif certified[j]:
            cert = f"certified (lower limit {_fmt(lower[j])} > {level:g})"
        else:
            cert = f"not certified at this n (lower limit {_fmt(lower[j])} \u2264 {level:g})"
        texts.append(f"{cert}; {stab}" if code[j] == "not_certified" else f"{stab}; {cert}")
    return code.astype(object), _obj(texts)


def _method_tables(name: str, res: ExplanationResult | IdentificationResult, *,
                   level: float | None, multiplicity: str, top_k: int):
    expl = res if isinstance(res, ExplanationResult) else None
    ident = expl.identification if expl is not None else res
    if not isinstance(ident, IdentificationResult):
        raise ValidationError(
            f"method {name!r}: expected an ExplanationResult or IdentificationResult; got "
            f"{type(res).__name__}")
    from ..demo import default_level

    lvl = default_level(ident.metric) if level is None else float(level)
    summ = _summary(ident, name, lvl, multiplicity)
    n, c = ident.similarity.shape
    width = c + 1
    rows_n = np.arange(n, dtype=np.int64)

    # set memberships as sorted keys neuron * (c + 1) + column
    order = rank_concepts(ident.similarity) if c else np.zeros((n, 0), np.int64)
    k = min(int(top_k), c)
    top_keys = (rows_n[:, None] * width + order[:, :k]).reshape(-1)
    cert_keys = _set_pairs(ident.certified_sets, n, c)
    boot_keys = split_keys = np.zeros(0, np.int64)
    if expl is not None:
        if expl.mode != "split":
            boot_keys = _set_pairs(expl.prediction_sets, n, c)
        if expl.split_sets is not None:
            split_keys = _set_pairs(expl.split_sets, n, c)
    label_keys = rows_n[ident.best >= 0] * width + ident.best[ident.best >= 0]
    keys = np.unique(np.concatenate([top_keys, cert_keys, boot_keys, split_keys, label_keys]))
    ni, col = np.divmod(keys, width)
    is_none = col == c
    cc = np.minimum(col, max(c - 1, 0))

    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(c, dtype=np.int64)[None, :].repeat(n, 0), axis=1)
    row_rank = np.where(is_none, c, rank[ni, cc] if c else 0) + 1  # 1-based; none last

    def pick(grid: np.ndarray) -> np.ndarray:
        return np.where(is_none, np.nan, grid[ni, cc])

    if expl is not None:
        eff_b = expl.n_boot or (expl.fold_winners.shape[0] if expl.fold_winners is not None else 1)
        prob = np.where(is_none, expl.none_probability[ni], expl.probabilities[ni, cc])
        se = np.sqrt(prob * (1 - prob) / max(eff_b, 1))
        low = np.full(len(keys), np.nan)
        high = np.full(len(keys), np.nan)
        ik = (rows_n[:, None] * width + expl.interval_concepts).reshape(-1)
        pos = np.searchsorted(keys, ik)
        low[pos] = expl.intervals[..., 0].reshape(-1)
        high[pos] = expl.intervals[..., 1].reshape(-1)
        bsize = (np.fromiter((len(s) for s in expl.prediction_sets), np.int64, count=n)
                 if expl.mode != "split" else np.zeros(n, np.int64))
        ssize = (np.fromiter((len(s) for s in expl.split_sets), np.int64, count=n)
                 if expl.split_sets is not None else np.zeros(n, np.int64))
        set_size = expl.set_size.astype(np.int64)
        single_none = np.array([len(s) == 1 and s[0] < 0 for s in expl.prediction_sets])
        alpha, n_boot, mode, target = float(expl.alpha), int(expl.n_boot), expl.mode, \
            expl.coverage_target
        per_neuron = {"mode_frequency": expl.mode_frequency, "agreement": expl.agreement,
                      "entropy": expl.entropy, "none_probability": expl.none_probability,
                      "self_in_set": expl.self_in_set.astype(bool)}
        kind = "explanation"
    else:
        prob = se = low = high = np.full(len(keys), np.nan)
        bsize = ssize = np.zeros(n, np.int64)
        set_size = np.fromiter((len(s) for s in ident.certified_sets), np.int64, count=n)
        single_none = np.zeros(n, bool)
        alpha, n_boot, mode = math.nan, 0, ""
        target = "population-best concept (>= 1 - delta)"
        nan = np.full(n, np.nan)
        per_neuron = {"mode_frequency": nan, "agreement": nan, "entropy": nan,
                      "none_probability": nan, "self_in_set": np.zeros(n, bool)}
        kind = "identification"
    csize = np.fromiter((len(s) for s in ident.certified_sets), np.int64, count=n)

    # rows of a neuron ordered by similarity rank ("none" last)
    perm = np.lexsort((row_rank, ni))
    m = len(keys)
    concept_names = np.asarray(ident.concept_names + [NONE_NAME], dtype=object)
    neuron_names = np.asarray(ident.neuron_names, dtype=object)
    n_groups = float(ident.n_units)
    pairs = {
        "method": _obj([name] * m),
        "neuron_index": ni,
        "neuron": neuron_names[ni],
        "concept_index": np.where(is_none, -1, col),
        "concept": concept_names[col],
        "rank": row_rank,
        "is_label": np.isin(keys, label_keys),
        "similarity": pick(ident.similarity),
        "lower": pick(ident.lower),
        "upper": pick(ident.upper),
        "null": pick(ident.null),
        "boot_low": low,
        "boot_high": high,
        "probability": prob,
        "probability_se": se,
        "in_bootstrap_set": np.isin(keys, boot_keys),
        "in_split_set": np.isin(keys, split_keys),
        "in_certified_set": np.isin(keys, cert_keys),
        "in_top_k": np.isin(keys, top_keys),
        "bootstrap_set_size": bsize[ni],
        "split_set_size": ssize[ni],
        "certified_set_size": csize[ni],
        "label_certified": summ.certified[ni],
        "metric": _obj([ident.metric] * m),
        "n_samples": np.full(m, ident.n_samples, np.int64),
        "n_groups": np.full(m, n_groups),
        "delta": np.full(m, float(ident.delta)),
        "alpha": np.full(m, alpha),
        "level": np.full(m, lvl),
        "multiplicity": _obj([multiplicity] * m),
        "n_boot": np.full(m, n_boot, np.int64),
    }
    pairs = {key: np.asarray(v)[perm] for key, v in pairs.items()}
    for key in ("similarity", "lower", "upper", "null", "boot_low", "boot_high",
                "probability", "probability_se", "n_groups", "delta", "alpha", "level"):
        pairs[key] = pairs[key].astype(np.float64)

    info = MethodSummary(
        name=name, kind=kind, metric=ident.metric, n_neurons=n, n_concepts=c,
        n_samples=int(ident.n_samples), n_groups=n_groups, delta=float(ident.delta),
        alpha=alpha, n_boot=n_boot, mode=mode, coverage_target=target, level=lvl,
        multiplicity=multiplicity, n_certified=int(summ.n_certified), guarantee=summ.guarantee,
        expected_false=float(ident.delta * n) if multiplicity == "none" else math.nan,
        n_layer_neurons=n)
    best_lower = ident.best_lower
    verdict, verdict_text = _verdicts(kind, ident.best, best_lower, summ.certified, set_size,
                                      single_none, lvl, info.set_label)
    neurons = {
        "method": _obj([name] * n),
        "neuron_index": rows_n,
        "neuron": neuron_names.copy(),
        "label": _obj(ident.labels),
        "concept_index": ident.best.astype(np.int64),
        "similarity": ident.best_similarity.astype(np.float64),
        "lower": best_lower.astype(np.float64),
        "upper": ident.best_upper.astype(np.float64),
        "null": ident._pick(ident.null).astype(np.float64),
        "regret_bound": np.asarray(ident.regret_bound, np.float64),
        "certified": np.asarray(summ.certified, bool),
        "p_value": np.asarray(summ.p_values, np.float64),
        "set_size": set_size,
        "bootstrap_set_size": bsize,
        "split_set_size": ssize,
        "certified_set_size": csize,
        **{key: np.asarray(v, bool if key == "self_in_set" else np.float64)
           for key, v in per_neuron.items()},
        "verdict": verdict,
        "verdict_text": verdict_text,
    }
    return info, neurons, pairs


# --------------------------------------------------------------------------- #
# LayerResults
# --------------------------------------------------------------------------- #

def _method_names(results: Any) -> list[tuple[str, Any]]:
    if isinstance(results, (ExplanationResult, IdentificationResult)):
        results = [results]
    if isinstance(results, Mapping):
        items = [(str(k), v) for k, v in results.items()]
    elif isinstance(results, Sequence) and not isinstance(results, str):
        items = []
        for i, r in enumerate(results):
            ident = r.identification if isinstance(r, ExplanationResult) else r
            params = getattr(ident, "parameters", {}) or {}
            base = str(params.get("method") or getattr(ident, "metric", f"method{i}"))
            items.append((base, r))
        seen: dict[str, int] = {}
        renamed = []
        for base, r in items:
            seen[base] = seen.get(base, 0) + 1
            renamed.append((base if seen[base] == 1 else f"{base}-{seen[base]}", r))
        items = renamed
    else:
        raise ValidationError(
            "`results` must be a result, a sequence of results or a dict name -> result; got "
            f"{type(results).__name__}")
    if not items:
        raise ValidationError("`results` is empty; give at least one result")
    names = [k for k, _ in items]
    if len(set(names)) != len(names) or any(not k for k in names):
        raise ValidationError(f"method names must be unique and non-empty; got {names}")
    return items


@dataclass(frozen=True, eq=False)
class LayerResults:
    """The results of one or more methods on one layer, ready to audit and share.

    Build it with :meth:`from_results`; save it with :meth:`save` and load it
    with :meth:`load` (an equal object comes back); write the HTML report with
    :meth:`write_html`.

    Attributes
    ----------
    neuron_names : tuple of str
        The layer's neurons (the same for every method).
    methods : tuple of MethodSummary
        One per method, in order.
    neurons : dict of str to ndarray
        One row per (method, neuron), method-major; columns :data:`NEURON_COLUMNS`.
    pairs : dict of str to ndarray
        The tidy table: one row per (method, neuron, concept) for the concepts in
        any set and the ``top_k`` by similarity (and the "none" outcome where it
        lies in a set, with ``concept_index`` -1); columns :data:`PAIR_COLUMNS`.
        Set sizes are 0 where that set was not computed (no bootstrap, no split
        mode); ``probability``, ``boot_low``/``boot_high`` and ``alpha`` are NaN
        without a bootstrap; ``n_groups`` counts the independent units.
    top_k : int
    parameters : dict
        Provenance of the methods (their parameters, seeds, input hashes).

    Examples
    --------
    >>> import numpy as np, neurocert
    >>> from neurocert.report import LayerResults
    >>> rng = np.random.default_rng(0)
    >>> z = (rng.random((2000, 4)) < 0.2).astype(float)
    >>> a = 2.0 * z[:, [1, 2]] + rng.normal(size=(2000, 2))
    >>> res = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=100, rng=0)
    >>> layer = LayerResults.from_results({"auroc": res})
    >>> layer.neurons["verdict"].tolist()
    ['stable', 'stable']
    """

    neuron_names: tuple[str, ...]
    methods: tuple[MethodSummary, ...]
    neurons: dict[str, np.ndarray] = field(repr=False)
    pairs: dict[str, np.ndarray] = field(repr=False)
    top_k: int = 5
    parameters: dict[str, Any] = field(default_factory=dict, repr=False)

    # ----------------------------------------------------------------- build
    @classmethod
    def from_results(cls, results: Any, *, level: float | Mapping[str, float] | None = None,
                     multiplicity: str = "none", top_k: int = 5) -> LayerResults:
        """Gather the results of one or more methods on one layer.

        Parameters
        ----------
        results : result, sequence of results, or dict of str to result
            :class:`~neurocert.ExplanationResult` or
            :class:`~neurocert.IdentificationResult` objects; a dict names the
            methods (otherwise the metric names them).
        level : float or dict of str to float, optional
            Certify a label when its lower limit exceeds ``level`` (per method with
            a dict); default per metric (0.5 for AUROC and balanced accuracy, 0.04
            for IoU, else 0).
        multiplicity : {"none", "fwer", "fdr"}
            Correction over the neurons (see :meth:`IdentificationResult.summary`).
            ``"fwer"`` and ``"fdr"`` need the probing data, so they work on results
            computed in this session, not on results loaded from disk.
        top_k : int
            Concepts by similarity kept in the tidy table besides the set members.

        Returns
        -------
        LayerResults

        Raises
        ------
        ValidationError
            If the methods describe different neurons, a name is repeated, or
            the multiplicity correction is impossible for a loaded result.
        """
        if multiplicity not in MULTIPLICITY:
            raise ValidationError(
                f"`multiplicity` must be one of {MULTIPLICITY}; got {multiplicity!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValidationError(f"`top_k` must be a positive integer; got {top_k!r}")
        items = _method_names(results)
        if isinstance(level, Mapping):
            unknown = sorted(set(level) - {k for k, _ in items})
            if unknown:
                raise ValidationError(f"`level` names unknown method(s) {unknown}")
        infos, neuron_parts, pair_parts, params = [], [], [], {}
        names0: list[str] | None = None
        for name, res in items:
            lvl = level.get(name) if isinstance(level, Mapping) else level
            info, neurons, pairs = _method_tables(name, res, level=lvl,
                                                  multiplicity=multiplicity, top_k=int(top_k))
            ident = res.identification if isinstance(res, ExplanationResult) else res
            if names0 is None:
                names0 = list(ident.neuron_names)
            elif list(ident.neuron_names) != names0:
                raise ValidationError(
                    f"method {name!r} describes different neurons ({len(ident.neuron_names)}: "
                    f"{ident.neuron_names[:3]}...) than {items[0][0]!r} ({len(names0)}: "
                    f"{names0[:3]}...); a LayerResults holds one layer")
            infos.append(info)
            neuron_parts.append(neurons)
            pair_parts.append(pairs)
            own = dict(res.parameters)
            if isinstance(res, ExplanationResult):
                own["identification"] = dict(ident.parameters)
            params[name] = json.loads(json.dumps(own, default=str, allow_nan=True))
        return cls(neuron_names=tuple(names0 or ()), methods=tuple(infos),
                   neurons=_concat(neuron_parts, NEURON_COLUMNS),
                   pairs=_concat(pair_parts, PAIR_COLUMNS), top_k=int(top_k),
                   parameters={"methods": params})

    # ----------------------------------------------------------------- views
    @property
    def n_neurons(self) -> int:
        return len(self.neuron_names)

    @property
    def method_names(self) -> list[str]:
        return [m.name for m in self.methods]

    def method(self, name: str) -> MethodSummary:
        """The :class:`MethodSummary` of ``name``."""
        for m in self.methods:
            if m.name == name:
                return m
        raise ValidationError(f"no method {name!r}; methods: {', '.join(self.method_names)}")

    def neuron_rows(self, method: str) -> dict[str, np.ndarray]:
        """Rows of the per-neuron table for one method (in neuron order)."""
        self.method(method)
        mask = self.neurons["method"] == method
        return {k: v[mask] for k, v in self.neurons.items()}

    def verdict_counts(self, method: str) -> dict[str, int]:
        """Neurons per verdict code for one method."""
        v = self.neuron_rows(method)["verdict"]
        return {code: int(np.sum(v == code)) for code in VERDICTS}

    def neuron_indices(self, neurons: Sequence[str | int]) -> np.ndarray:
        """Indices of neurons given by name (or by integer index).

        Raises
        ------
        ValidationError
            Naming the first neuron that is not in the layer.
        """
        lookup = {name: i for i, name in enumerate(self.neuron_names)}
        out = []
        for x in neurons:
            if isinstance(x, str) and x in lookup:
                out.append(lookup[x])
            elif isinstance(x, (int, np.integer)) and not isinstance(x, bool) \
                    and 0 <= int(x) < self.n_neurons or isinstance(x, str) and x.strip().lstrip("-").isdigit() \
                    and 0 <= int(x) < self.n_neurons:
                out.append(int(x))
            else:
                shown = ", ".join(repr(n) for n in self.neuron_names[:5])
                more = f", ... ({self.n_neurons} in all)" if self.n_neurons > 5 else ""
                raise ValidationError(
                    f"neuron {x!r} does not exist in this layer; neurons are named {shown}{more}"
                    f" or given by index 0..{self.n_neurons - 1}")
        if not out:
            raise ValidationError("`neurons` is empty; give at least one neuron")
        return np.array(sorted(set(out)), np.int64)

    def select(self, neurons: Sequence[str | int]) -> LayerResults:
        """The same results restricted to some neurons (certification stays layer-wide).

        Parameters
        ----------
        neurons : sequence of str or int
            Neuron names or indices.
        """
        idx = self.neuron_indices(neurons)
        keep_n = np.isin(self.neurons["neuron_index"], idx)
        keep_p = np.isin(self.pairs["neuron_index"], idx)
        neurons_t = {k: v[keep_n] for k, v in self.neurons.items()}
        infos = []
        for m in self.methods:
            mask = neurons_t["method"] == m.name
            d = asdict(m)
            d.update(n_neurons=int(mask.sum()),
                     n_certified=int(np.sum(neurons_t["certified"][mask])),
                     expected_false=(m.delta * m.n_layer_neurons if m.multiplicity == "none"
                                     else math.nan))
            infos.append(MethodSummary(**d))
        return LayerResults(neuron_names=tuple(self.neuron_names[i] for i in idx),
                            methods=tuple(infos), neurons=neurons_t,
                            pairs={k: v[keep_p] for k, v in self.pairs.items()},
                            top_k=self.top_k, parameters=dict(self.parameters))

    def __repr__(self) -> str:
        parts = ", ".join(f"{m.name}: {m.metric}, {m.n_certified}/{m.n_neurons} certified"
                          for m in self.methods)
        return (f"LayerResults(n_neurons={self.n_neurons}, methods=[{parts}], "
                f"pairs={len(self.pairs['method'])} rows)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerResults):
            return NotImplemented
        return (self.neuron_names == other.neuron_names and self.methods == other.methods
                and self.top_k == other.top_k
                and _same(self.neurons, other.neurons) and _same(self.pairs, other.pairs)
                and _same(self.parameters, other.parameters))

    __hash__ = None  # type: ignore[assignment]

    def _repr_html_(self) -> str:
        from ._html import layer_html

        return layer_html(self)

    # ----------------------------------------------------------------- frames
    def to_frame(self):
        """The tidy table as a pandas DataFrame (one row per method, neuron and concept)."""
        pd = require("pandas", "LayerResults.to_frame()")
        return pd.DataFrame(self.pairs)

    def neuron_frame(self):
        """The per-neuron table as a pandas DataFrame (one row per method and neuron)."""
        pd = require("pandas", "LayerResults.neuron_frame()")
        return pd.DataFrame(self.neurons)

    def method_frame(self):
        """One row per method: what ran and how many labels are certified."""
        pd = require("pandas", "LayerResults.method_frame()")
        return pd.DataFrame([asdict(m) for m in self.methods])

    def write_table(self, path: str | Path, *, format: str | None = None) -> Path:
        """Write the tidy table as Parquet or CSV (by extension), atomically."""
        from .. import results

        return results.write_table(path, self.pairs, format=format)

    def write_html(self, path: str | Path, **kwargs: Any) -> Path:
        """Write the self-contained HTML report; see :func:`neurocert.report.write_report`."""
        from ._html import write_report

        return write_report(self, path, **kwargs)

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path, *, csv: bool = False) -> Path:
        """Save as a results directory (Parquet tables + JSON manifest), atomically.

        Tables: ``pairs`` (the tidy table), ``neurons``, ``methods``, ``layer``
        (neuron names). With ``csv=True`` a CSV copy of each sits beside it.
        """
        from .. import results

        methods = {f.name: np.array([getattr(m, f.name) for m in self.methods],
                                    dtype=object if f.type == "str" else None)
                   for f in fields(MethodSummary)}
        for key, v in methods.items():
            if v.dtype.kind == "U":
                methods[key] = v.astype(object)
        tables = {"pairs": self.pairs, "neurons": self.neurons, "methods": methods,
                  "layer": {"neuron": _obj(self.neuron_names)}}
        manifest = results.make_manifest(KIND, parameters={"top_k": self.top_k,
                                                           **self.parameters}, seed=None)
        return results.save_tables(path, tables, manifest, csv=csv)

    @classmethod
    def load(cls, path: str | Path) -> LayerResults:
        """Load a directory written by :meth:`save`.

        Raises
        ------
        SchemaError
            If it is not such a directory, its schema version differs, or a
            required table or column is missing.
        """
        from .. import results

        tables, manifest = results.load_tables(path, kind=KIND, required={
            "pairs": list(PAIR_COLUMNS), "neurons": list(NEURON_COLUMNS),
            "methods": [f.name for f in fields(MethodSummary)], "layer": ["neuron"]})
        mt = tables["methods"]
        infos = []
        for i in range(len(mt["name"])):
            d = {}
            for f in fields(MethodSummary):
                v = mt[f.name][i]
                d[f.name] = (str(v) if f.type == "str" else float(v) if f.type == "float"
                             else int(v))
            infos.append(MethodSummary(**d))
        params = dict(manifest.get("parameters") or {})
        top_k = int(params.pop("top_k", 5))

        def norm(cols: dict[str, np.ndarray], order: Sequence[str]) -> dict[str, np.ndarray]:
            out = {}
            for key in order:
                v = cols[key]
                out[key] = _obj(list(v)) if key in _STR_COLUMNS else v
            return out

        return cls(neuron_names=tuple(str(x) for x in tables["layer"]["neuron"]),
                   methods=tuple(infos), neurons=norm(tables["neurons"], NEURON_COLUMNS),
                   pairs=norm(tables["pairs"], PAIR_COLUMNS), top_k=top_k, parameters=params)


def _concat(parts: list[dict[str, np.ndarray]], order: Sequence[str]) -> dict[str, np.ndarray]:
    out = {}
    for key in order:
        vals = [p[key] for p in parts]
        if vals[0].dtype.kind == "O":
            col = np.empty(sum(len(v) for v in vals), dtype=object)
            col[:] = [x for v in vals for x in v]
            out[key] = col
        else:
            out[key] = np.concatenate(vals)
    return out


# --------------------------------------------------------------------------- #
# Reading any saved result
# --------------------------------------------------------------------------- #

_LOADERS = {"identification": IdentificationResult, "explanation": ExplanationResult,
            KIND: LayerResults}


def load_result(path: str | Path) -> ExplanationResult | IdentificationResult | LayerResults:
    """Load a results directory of any kind the report reads.

    Parameters
    ----------
    path : str or Path
        A directory written by :meth:`IdentificationResult.save`,
        :meth:`ExplanationResult.save` or :meth:`LayerResults.save`.

    Raises
    ------
    SchemaError
        If ``path`` is not a results directory, holds another kind of result,
        has another schema version, or lacks required tables or columns.
    """
    from .. import results

    target = Path(path)
    kind = None
    try:
        manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
        kind = manifest.get("kind") if isinstance(manifest, dict) else None
    except (OSError, UnicodeDecodeError, ValueError):
        results.load_tables(target)  # raises its one-line SchemaError
    if kind not in _LOADERS:
        raise SchemaError(
            f"{str(target)!r} holds a {kind!r} result; the report reads "
            f"{', '.join(repr(k) for k in _LOADERS)} results")
    return _LOADERS[kind].load(target)
