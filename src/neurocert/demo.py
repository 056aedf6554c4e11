"""The synthetic demo: identify planted concepts and show how far each label can be trusted.

:func:`run_demo` simulates a layer with :func:`neurocert.simulate.planted_layer`
(concepts from common to rare, neurons from strongly to weakly selective, plus
some pure-noise neurons), runs :func:`neurocert.identify`, certifies the layer
with :meth:`~neurocert.IdentificationResult.summary`, and optionally saves the
result directory. ``neurocert demo`` is a thin shell over it.

With the defaults (AUROC, 20,000 samples, 30 neurons of which 6 are noise, 20
concepts with frequencies from 0.3 down to 0.003) the output shows every case
a user meets: strong neurons certified with a singleton certified set, weak or
rare ones certified above chance but with several candidate concepts, rare and
weak ones not certified at all, and noise neurons that get a label (the argmax
always exists) but no certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import ValidationError
from .identify import MULTIPLICITY, IdentificationResult, LayerSummary, identify
from .metrics import get_metric
from .simulate import PlantedLayer, planted_layer

__all__ = ["DEFAULT_LEVELS", "DemoResult", "default_level", "run_demo"]

#: Certification level per metric where a conventional one exists: the chance
#: level of AUROC and balanced accuracy, and NetDissect's detector cut-off for IoU.
DEFAULT_LEVELS: dict[str, float] = {"auroc": 0.5, "balanced_accuracy": 0.5, "iou": 0.04}
#: Binarization used for count metrics when neither ``threshold`` nor ``top_frac`` is given
#: (NetDissect's top quantile).
DEFAULT_TOP_FRAC = 0.005
#: Mean shifts of the planted neurons, cycled over neurons.
SEPARATIONS = (3.0, 2.0, 1.0, 0.5)


def default_level(metric: str) -> float:
    """Level above which a label counts as certified when none is given.

    0.5 for ``auroc`` and ``balanced_accuracy`` (chance), 0.04 for ``iou``
    (NetDissect's detector cut-off), otherwise 0 (the default of
    :meth:`~neurocert.IdentificationResult.summary`). Similarities that are not
    registered metrics (soft-WPMI and the other CLIP-Dissect scores) have no
    bound and get 0.
    """
    from .metrics import available_metrics

    if metric not in available_metrics():
        return 0.0
    return DEFAULT_LEVELS.get(get_metric(metric).name, 0.0)


@dataclass(frozen=True, eq=False)
class DemoResult:
    """Everything :func:`run_demo` produced.

    Attributes
    ----------
    result : IdentificationResult
    layer : PlantedLayer
        The simulated data with the planted truth (``layer.planted[j] == -1``: noise).
    summary : LayerSummary
        Certification at ``level`` with the chosen multiplicity correction.
    parameters : dict
        Every parameter of the run (sizes, frequencies, separations, metric, seed, ...).
    path : pathlib.Path or None
        The saved results directory.
    """

    result: IdentificationResult
    layer: PlantedLayer = field(repr=False)
    summary: LayerSummary = field(repr=False)
    parameters: dict[str, Any] = field(repr=False)
    path: Path | None = None

    @property
    def planted_names(self) -> list[str]:
        """Name of each neuron's planted concept ("" for noise neurons)."""
        names = self.result.concept_names
        return [names[k] if k >= 0 else "" for k in self.layer.planted]

    @property
    def n_planted(self) -> int:
        return int(np.sum(self.layer.planted >= 0))

    @property
    def correct(self) -> np.ndarray:
        """Whether each planted neuron's label is its planted concept, (n_planted,)."""
        mask = self.layer.planted >= 0
        return self.result.best[mask] == self.layer.planted[mask]

    @property
    def share_correct(self) -> float:
        """Share of planted neurons whose label is the planted concept (NaN if none)."""
        c = self.correct
        return float(c.mean()) if c.size else float("nan")

    @property
    def n_noise_certified(self) -> int:
        """Noise neurons that were (wrongly) certified."""
        return int(np.sum(self.summary.certified & (self.layer.planted < 0)))

    def to_frame(self):
        """The result's table plus ``planted`` and ``certified`` columns (needs pandas)."""
        df = self.result.to_frame()
        df.insert(1, "planted", self.planted_names)
        df["certified"] = self.summary.certified
        return df

    def __repr__(self) -> str:
        return (f"DemoResult(metric={self.result.metric!r}, n_neurons={self.result.n_neurons}, "
                f"certified={self.summary.n_certified}, share_correct={self.share_correct:.3g}, "
                f"path={None if self.path is None else str(self.path)!r})")


def _check_size(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValidationError(f"`{name}` must be an integer >= {minimum}; got {value!r}")
    return int(value)


def run_demo(*, n_samples: int = 20_000, n_neurons: int = 30, n_concepts: int = 20,
             metric: str = "auroc", delta: float = 0.05, threshold: float | None = None,
             top_frac: float | None = None, level: float | None = None,
             multiplicity: str = "fdr", noise_share: float = 0.2,
             max_freq: float = 0.3, min_freq: float = 0.003, seed: int | None = 0,
             out: str | Path | None = None, csv: bool = False) -> DemoResult:
    """Simulate a layer with planted concepts, identify them and certify the labels.

    Parameters
    ----------
    n_samples, n_neurons, n_concepts : int
        Sizes of the simulated probing set.
    metric : str
        Similarity metric (see :func:`neurocert.available_metrics`).
    delta : float
        Failure probability of the confidence limits.
    threshold, top_frac : float, optional
        Binarization for count metrics; with neither, count metrics use
        ``top_frac=0.005`` (NetDissect).
    level : float, optional
        Certify a label when its lower limit exceeds ``level``; default
        :func:`default_level` of the metric.
    multiplicity : {"none", "fwer", "fdr"}
        Correction over neurons in :meth:`~neurocert.IdentificationResult.summary`.
    noise_share : float in [0, 1)
        Share of neurons that respond to no concept (the last ones).
    max_freq, min_freq : float
        Concept frequencies are geometric from ``max_freq`` down to ``min_freq``.
    seed : int, optional
        Seed of the simulation (the only randomness).
    out : str or Path, optional
        Save the result there (:meth:`~neurocert.IdentificationResult.save`);
        the planted truth is stored in its parameters under ``"demo"``.
    csv : bool
        Also write CSV copies of the tables.

    Returns
    -------
    DemoResult

    Notes
    -----
    Neuron ``j < n_planted`` responds to concept ``j mod n_concepts`` with mean
    shift ``(3, 2, 1, 0.5)[j mod 4]``; the rest are noise. Planted neurons thus
    cover common and rare concepts at every strength.

    Examples
    --------
    >>> from neurocert.demo import run_demo
    >>> demo = run_demo(n_samples=2000, n_neurons=6, n_concepts=4)
    >>> demo.summary.n_neurons
    6
    """
    n_samples = _check_size(n_samples, "n_samples", 2)
    n_neurons = _check_size(n_neurons, "n_neurons", 1)
    n_concepts = _check_size(n_concepts, "n_concepts", 1)
    if multiplicity not in MULTIPLICITY:
        raise ValidationError(f"`multiplicity` must be one of {MULTIPLICITY}; got {multiplicity!r}")
    if not 0.0 <= float(noise_share) < 1.0:
        raise ValidationError(f"`noise_share` must lie in [0, 1); got {noise_share!r}")
    if not 0.0 < float(min_freq) <= float(max_freq) < 1.0:
        raise ValidationError(
            f"need 0 < min_freq <= max_freq < 1; got min_freq={min_freq!r}, max_freq={max_freq!r}")
    m = get_metric(metric)
    if m.binarized_neuron and threshold is None and top_frac is None:
        top_frac = DEFAULT_TOP_FRAC
    lvl = default_level(m.name) if level is None else float(level)

    n_planted = n_neurons - int(round(noise_share * n_neurons))
    freq = np.geomspace(float(max_freq), float(min_freq), n_concepts)
    sep = np.resize(np.asarray(SEPARATIONS), n_neurons)
    layer = planted_layer(n_samples, n_neurons, n_concepts, concept_freq=freq, separation=sep,
                          n_planted=n_planted, rng=seed)
    width = len(str(max(n_concepts, n_neurons) - 1))
    concept_names = [f"c{k:0{width}d}" for k in range(n_concepts)]
    neuron_names = [f"n{j:0{width}d}" for j in range(n_neurons)]
    result = identify(layer.activations, layer.concepts, metric=m.name, delta=delta,
                      concept_names=concept_names, neuron_names=neuron_names,
                      threshold=threshold, top_frac=top_frac)
    summary = result.summary(lvl, multiplicity=multiplicity)
    parameters = {
        "n_samples": n_samples, "n_neurons": n_neurons, "n_concepts": n_concepts,
        "n_planted": n_planted, "metric": m.name, "delta": float(delta),
        "threshold": threshold, "top_frac": top_frac, "level": lvl,
        "multiplicity": multiplicity, "seed": seed,
        "concept_freq": freq, "separation": layer.separation, "planted": layer.planted,
    }
    result.parameters["demo"] = parameters
    result.parameters["seed"] = seed
    path = None if out is None else result.save(out, csv=csv)
    return DemoResult(result=result, layer=layer, summary=summary, parameters=parameters,
                      path=path)
