"""Concatenate per-neuron-block results along the neuron axis."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..exceptions import ValidationError
from ..explanation import ExplanationResult
from ..identify import IdentificationResult, _p_values
from ..sufficient import APStats, CountStats, MomentStats, RankStats

__all__ = ["BlockIdentificationResult", "concat_stats", "merge_explanations",
           "merge_identifications", "strip_identification"]


class BlockIdentificationResult(IdentificationResult):
    """An :class:`~neurocert.IdentificationResult` assembled from neuron blocks.

    Equal field by field to the single-machine result. Its p-values use statistics
    the blocks computed (for ``top_frac``, at the threshold-band level of
    :meth:`IdentificationResult.p_values` for the *whole* layer), so
    :meth:`summary` with ``multiplicity="fwer"``/``"fdr"`` works without reading the
    data again.
    """

    __hash__ = None  # type: ignore[assignment]

    def p_values(self, level: float) -> np.ndarray:
        stats = self.__dict__.get("_pvalue_stats")
        if stats is None:
            return super().p_values(level)
        return _p_values(stats, self, float(level))


def strip_identification(res: IdentificationResult) -> IdentificationResult:
    """The same result without the attached probing data (cheap to send back)."""
    return replace(res)


def _cat(parts: list[Any], axis: int = 0) -> Any:
    if parts[0] is None:
        return None
    return np.concatenate(parts, axis=axis)


def concat_stats(parts: list[Any]) -> Any:
    """Sufficient statistics of consecutive neuron blocks, concatenated over neurons."""
    first = parts[0]
    if isinstance(first, CountStats):
        return CountStats(tp=_cat([s.tp for s in parts]), active=_cat([s.active for s in parts]),
                          present=first.present, design=first.design,
                          cutoffs=_cat([s.cutoffs for s in parts]),
                          tp_lo=_cat([s.tp_lo for s in parts]),
                          tp_hi=_cat([s.tp_hi for s in parts]))
    if isinstance(first, RankStats):
        return RankStats(num=_cat([s.num for s in parts]), present=first.present,
                         design=first.design)
    if isinstance(first, MomentStats):
        return MomentStats(sxc=_cat([s.sxc for s in parts]), sx=_cat([s.sx for s in parts]),
                           sxx=_cat([s.sxx for s in parts]), sc=first.sc, scc=first.scc,
                           shift=_cat([s.shift for s in parts]), design=first.design,
                           x_range=_cat([s.x_range for s in parts], axis=1),
                           c_range=first.c_range)
    if isinstance(first, APStats):
        return APStats(ap=_cat([s.ap for s in parts]), present=first.present,
                       design=first.design)
    raise ValidationError(f"cannot merge statistics of type {type(first).__name__}")


def _same(parts: list[Any], name: str) -> Any:
    value = parts[0]
    for other in parts[1:]:
        if other != value:
            raise ValidationError(f"neuron blocks disagree on {name!r}: {value!r} vs {other!r}")
    return value


def merge_identifications(parts: list[IdentificationResult], *,
                          pvalue_stats: Any = None,
                          timings: dict[str, float] | None = None) -> BlockIdentificationResult:
    """One identification result from consecutive neuron blocks."""
    first = parts[0]
    result = BlockIdentificationResult(
        metric=_same([p.metric for p in parts], "metric"),
        delta=_same([p.delta for p in parts], "delta"),
        similarity=_cat([p.similarity for p in parts]),
        lower=_cat([p.lower for p in parts]),
        upper=_cat([p.upper for p in parts]),
        null=_cat([p.null for p in parts]),
        best=_cat([p.best for p in parts]),
        top=_cat([p.top for p in parts]),
        certified_sets=tuple(s for p in parts for s in p.certified_sets),
        regret_bound=_cat([p.regret_bound for p in parts]),
        neuron_names=[n for p in parts for n in p.neuron_names],
        concept_names=first.concept_names,
        n_samples=_same([p.n_samples for p in parts], "n_samples"),
        n_units=_same([p.n_units for p in parts], "n_units"),
        parameters=dict(_same([p.parameters for p in parts], "parameters")),
        timings=dict(timings or {}))
    if pvalue_stats is not None:
        object.__setattr__(result, "_pvalue_stats", pvalue_stats)
    return result


def merge_explanations(parts: list[ExplanationResult], identification: IdentificationResult, *,
                       timings: dict[str, float] | None = None) -> ExplanationResult:
    """One bootstrap result from consecutive neuron blocks (replicates share their weights)."""
    def tup(name: str):
        vals = [getattr(p, name) for p in parts]
        return None if vals[0] is None else tuple(s for v in vals for s in v)

    def cat(name: str, axis: int = 0):
        return _cat([getattr(p, name) for p in parts], axis)

    return ExplanationResult(
        identification=identification,
        probabilities=cat("probabilities"), none_probability=cat("none_probability"),
        standard_error=cat("standard_error"), prediction_sets=tup("prediction_sets"),
        split_sets=tup("split_sets"), mode_frequency=cat("mode_frequency"),
        agreement=cat("agreement"), entropy=cat("entropy"), set_size=cat("set_size"),
        self_in_set=cat("self_in_set"), interval_concepts=cat("interval_concepts"),
        intervals=cat("intervals"), winners=cat("winners", 1), ties=cat("ties", 1),
        fold_winners=cat("fold_winners", 1), n_candidates=cat("n_candidates"),
        n_boot=_same([p.n_boot for p in parts], "n_boot"),
        alpha=_same([p.alpha for p in parts], "alpha"),
        mode=_same([p.mode for p in parts], "mode"),
        coverage_target=_same([p.coverage_target for p in parts], "coverage_target"),
        parameters=dict(_same([p.parameters for p in parts], "parameters")),
        timings=dict(timings or {}))
