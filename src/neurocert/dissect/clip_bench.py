"""Timing of soft-WPMI identification and BE at CLIP-Dissect scale.

``python -m neurocert.dissect.clip_bench`` times, on synthetic cosine P, the default
1,024 neurons x 2,000 samples x 1,000 concepts with B = 200 replicates:
identification, the whole of :func:`~neurocert.dissect.clip.clip_dissect_explain`, and
per replicate. As a baseline in the same run it times a few replicates of the direct
approach (materialise the resample with ``np.repeat``, then a loop over neurons with a
full sort and the float32 log terms, as CLIP-Dissect's ``soft_wpmi`` does), and checks
that both give the same labels.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np
from scipy.special import logsumexp

from ..exceptions import NoBoundWarning
from ..resample import as_seed_sequence, replicate_weights
from .clip import clip_dissect, clip_dissect_explain

__all__ = ["direct_replicate", "main", "run"]


def direct_replicate(act: np.ndarray, cos: np.ndarray, weights: np.ndarray, *, top_k: int = 100,
                     a: float = 10.0, lam: float = 1.0, min_prob: float = 1e-7,
                     p_start: float = 0.998, p_end: float = 0.97) -> np.ndarray:
    """soft-WPMI labels of one replicate the direct way: materialise, loop over neurons."""
    reps = weights.astype(np.int64)
    x = np.repeat(act, reps, axis=0)
    z = a * np.repeat(cos, reps, axis=0).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    q /= q.sum(axis=1, keepdims=True)
    q = q.astype(np.float32)
    p = (p_start - np.arange(top_k) / top_k * (p_start - p_end)).astype(np.float32)[:, None]
    log_given = np.empty((act.shape[1], cos.shape[1]))
    for j in range(act.shape[1]):
        top = np.argsort(-x[:, j], kind="stable")[:top_k]
        log_given[j] = np.log(1 + p * (q[top] - 1) + np.float32(min_prob)).sum(axis=0)
    prior = logsumexp(log_given, axis=0) - math.log(act.shape[1])
    return np.argmax(log_given - lam * prior, axis=1)


def run(n_neurons: int = 1024, n_samples: int = 2000, n_concepts: int = 1000,
        n_boot: int = 200, n_direct: int = 3, seed: int = 0) -> dict[str, float]:
    """Time identification, BE and the direct baseline; return the figures."""
    rng = np.random.default_rng(seed)
    # neurons partly driven by concept directions, so labels are not all ties
    cos = np.clip(0.2 + 0.04 * rng.standard_normal((n_samples, n_concepts)), -1, 1)
    drive = rng.integers(0, n_concepts, n_neurons)
    act = (cos[:, drive] * 20 + rng.standard_normal((n_samples, n_neurons))).astype(np.float32)
    cos = cos.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoBoundWarning)
        t0 = time.perf_counter()
        ident = clip_dissect(act, cos, kind="cosine")
        t1 = time.perf_counter()
        res = clip_dissect_explain(act, cos, kind="cosine", n_boot=n_boot, rng=seed)
        t2 = time.perf_counter()
    w = replicate_weights(as_seed_sequence(seed), range(n_direct), n_samples)
    t3 = time.perf_counter()
    agree = [float(np.mean(direct_replicate(act, cos, w[b]) == res.winners[b]))
             for b in range(n_direct)]
    t4 = time.perf_counter()
    per_rep = (t2 - t1 - ident.timings["total_s"]) / n_boot
    direct = (t4 - t3) / max(1, n_direct)
    return {"n_neurons": n_neurons, "n_samples": n_samples, "n_concepts": n_concepts,
            "n_boot": n_boot, "identify_s": t1 - t0, "explain_total_s": t2 - t1,
            "per_replicate_s": per_rep, "direct_per_replicate_s": direct,
            "speedup_vs_direct": direct / per_rep if per_rep > 0 else float("nan"),
            "direct_label_agreement": float(np.mean(agree)),
            "median_set_size": float(np.median(res.set_size)),
            "median_mode_frequency": float(np.median(res.mode_frequency))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--concepts", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--direct", type=int, default=3)
    args = ap.parse_args(argv)
    out = run(args.neurons, args.samples, args.concepts, args.boot, args.direct)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
