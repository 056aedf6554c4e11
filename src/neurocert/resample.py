"""Bootstrap replicates as weight vectors, reproducible under any chunking.

Replicate ``b``'s weight for a unit (a sample, or a group when ``groups`` is given)
is a pure function of ``(seed, b, block)`` (the seed's entropy and spawn key) where units are cut into fixed blocks of
``WEIGHT_BLOCK`` units. Every chunking of replicates or samples, thread count or
worker layout therefore draws the same numbers, and every neuron sees the same
resample (cross-neuron quantities need one resample for all neurons).

* ``"multinomial"`` (the ordinary bootstrap, ``sum w = n``): replicate ``b`` first
  splits ``n`` over the blocks, ``Multinomial(n, size_k / n)`` from
  ``SeedSequence(entropy, spawn_key=(b,))``, then block ``k`` splits its total
  uniformly over its units from ``SeedSequence(entropy, spawn_key=(b, k))``. By the
  conditional decomposition of the multinomial this is exactly ``Multinomial(n, 1/n)``.
* ``"poisson"``: independent ``Poisson(1)`` weights per unit from
  ``SeedSequence(entropy, spawn_key=(b, k))``.
* ``"predictive"``: as ``"multinomial"`` but with ``floor(n / 2)`` draws. A
  half-size resample has about twice the sampling variance, matching the
  spread of an independent probing set's explanation around this one's (two
  sampling noises instead of one); a calibration heuristic whose coverage is
  measured, not proven (``docs/theory.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .exceptions import ValidationError

__all__ = ["SPLIT_KEY", "WEIGHT_BLOCK", "as_seed_sequence", "fold_weights", "replicate_weights"]

#: spawn key of the fold assignment of split mode (never a replicate index)
SPLIT_KEY = 2**31

WEIGHT_BLOCK = 4096
SCHEMES = ("multinomial", "poisson", "predictive")


def as_seed_sequence(rng: Any) -> np.random.SeedSequence:
    """Turn ``None | int | SeedSequence | Generator`` into a SeedSequence, once.

    ``None`` draws fresh entropy (recorded in results so the run can be repeated);
    a Generator contributes one 128-bit draw.
    """
    if isinstance(rng, np.random.SeedSequence):
        return rng
    if rng is None:
        return np.random.SeedSequence()
    if isinstance(rng, np.random.Generator):
        return np.random.SeedSequence(int(rng.integers(0, 2**63, dtype=np.int64)) << 64
                                      | int(rng.integers(0, 2**63, dtype=np.int64)))
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.SeedSequence(int(rng))
    raise ValidationError(
        f"`rng` must be None, a non-negative int, a numpy SeedSequence or Generator; got {rng!r}")


def _gen(entropy: int, base: tuple[int, ...], *key: int) -> np.random.Generator:
    seq = np.random.SeedSequence(entropy, spawn_key=tuple(base) + tuple(key))
    return np.random.Generator(np.random.PCG64(seq))


def replicate_weights(seed: np.random.SeedSequence | int, replicates: np.ndarray | range,
                      n_units: int, *, scheme: str = "multinomial",
                      block: int = WEIGHT_BLOCK, dtype: Any = np.float32) -> np.ndarray:
    """Weights of the given replicates, shape ``(len(replicates), n_units)``.

    Parameters
    ----------
    seed : SeedSequence or int
        Its entropy keys every draw.
    replicates : sequence of int
        Replicate indices ``b``; the result for ``b`` does not depend on which
        other replicates are requested.
    n_units : int
        Number of resampled units (samples, or groups).
    scheme : {"multinomial", "poisson", "predictive"}
    block : int
        Fixed unit-block size (part of the definition of the stream: keep the default).
    dtype : numpy dtype
        Weights are small integers, exact in float32.
    """
    if scheme not in SCHEMES:
        raise ValidationError(f"`scheme` must be one of {SCHEMES}; got {scheme!r}")
    if isinstance(seed, np.random.SeedSequence):
        entropy, base = seed.entropy, tuple(seed.spawn_key)
    else:
        entropy, base = int(seed), ()
    reps = np.asarray(list(replicates), dtype=np.int64)
    starts = np.arange(0, n_units, block)
    sizes = np.minimum(block, n_units - starts)
    out = np.empty((reps.size, n_units), dtype=dtype)
    for row, b in enumerate(reps):
        b = int(b)
        if scheme in ("multinomial", "predictive"):
            draws_total = n_units if scheme == "multinomial" else max(1, n_units // 2)
            totals = _gen(entropy, base, b).multinomial(draws_total, sizes / n_units)
            for k, (s, size) in enumerate(zip(starts, sizes)):
                draws = _gen(entropy, base, b, k).integers(0, size, int(totals[k]))
                out[row, s:s + size] = np.bincount(draws, minlength=size)
        else:
            for k, (s, size) in enumerate(zip(starts, sizes)):
                out[row, s:s + size] = _gen(entropy, base, b, k).poisson(1.0, size)
    return out


def fold_weights(seed: np.random.SeedSequence, n_folds: int, n_samples: int,
                 groups: np.ndarray | None = None, n_groups: int | None = None) -> np.ndarray:
    """0/1 weights ``(n_folds, n_samples)`` of disjoint folds of (near-)equal size.

    The units (samples, or the groups given as codes ``groups`` in ``[0, n_groups)``,
    kept whole) are permuted by a generator keyed on ``(seed, SPLIT_KEY)`` and dealt
    to the folds in turn, so every split-mode caller (``bootstrap_explain``,
    NetDissect, CLIP-Dissect) gets the same folds for the same seed.
    """
    n_units = n_samples if groups is None else int(n_groups)
    gen = np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(seed.entropy, spawn_key=tuple(seed.spawn_key) + (SPLIT_KEY,))))
    perm = gen.permutation(n_units)
    fold_of_unit = np.empty(n_units, np.int64)
    fold_of_unit[perm] = np.arange(n_units) % n_folds
    fold = fold_of_unit if groups is None else fold_of_unit[groups]
    w = np.zeros((n_folds, n_samples), np.float32)
    w[fold, np.arange(n_samples)] = 1.0
    return w

