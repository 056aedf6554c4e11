"""``neurocert bound``: the planning bound and the required-sample-size planner."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from ..cli import register
from ..exceptions import ValidationError


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number; got {text!r}")
    return values


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one integer; got {text!r}")
    return values


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", required=True, metavar="M",
                   help="accuracy, precision, recall, iou, f1, balanced_accuracy, wpmi or auroc")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--n", type=_ints, default=None, metavar="N[,N...]",
                   help="probing-set sizes: print the radius r of |sim_hat - sim| <= r")
    g.add_argument("--epsilon", type=_floats, default=None, metavar="E[,E...]",
                   help="target radii: print the smallest n that reaches each")
    p.add_argument("--delta", type=float, default=0.05,
                   help="failure probability (default: 0.05)")
    p.add_argument("--n-concepts", type=int, default=1, metavar="K",
                   help="concepts the statement is uniform over (default: 1)")
    p.add_argument("--concept-freq", type=_floats, default=None, metavar="F[,F...]",
                   help="assumed P(concept); needed by every metric but accuracy")
    p.add_argument("--neuron-freq", type=_floats, default=None, metavar="F[,F...]",
                   help="assumed P(neuron active); count metrics without --top-frac")
    p.add_argument("--top-frac", type=float, default=None, metavar="Q",
                   help="data-dependent binarization: the neuron's top Q share of samples")
    p.add_argument("--truth", choices=("concept", "neuron"), default="concept",
                   help="ground-truth side for precision/recall (default: concept)")
    p.add_argument("--target", choices=("estimation", "regret"), default="estimation",
                   help="with --epsilon: bound |sim_hat - sim| (estimation) or the regret of "
                        "the chosen concept, 2r (default: estimation)")
    p.add_argument("--cells", type=int, default=64, metavar="C",
                   help="grid cells over the unknown joint frequency (default: 64; any value "
                        "is valid, more is tighter)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="also write the table: .csv or .parquet")


@register("bound", help="planning bound on the similarity error, or the samples needed for "
                        "a target error", add_arguments=_arguments)
def _run_bound(args: argparse.Namespace) -> int:
    import numpy as np

    from ..bounds import faithfulness_bound, required_samples
    from ..cli import _fmt, format_table

    if (args.n is None) == (args.epsilon is None):
        raise ValidationError("give exactly one of --n (radius for a sample size) and "
                              "--epsilon (sample size for a radius)")
    if args.out is not None and args.out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ValidationError(f"--out {str(args.out)!r} must end in .csv or .parquet")
    cfs = args.concept_freq or [None]
    nfs = args.neuron_freq or [None]
    common = {"delta": args.delta, "n_concepts": args.n_concepts, "top_frac": args.top_frac,
              "truth": args.truth}
    cols: dict[str, list] = {"metric": [], "concept_freq": [], "neuron_freq": []}
    if args.n is not None:
        cols.update(n=[], radius=[])
        for n in args.n:
            cf = None if cfs == [None] else np.array(cfs)[:, None]
            nf = None if nfs == [None] else np.array(nfs)[None, :]
            r = np.asarray(faithfulness_bound(args.metric, n=n, concept_freq=cf, neuron_freq=nf,
                                              cells=args.cells, **common), float)
            r = np.broadcast_to(r.reshape(r.shape + (1,) * (2 - r.ndim)) if r.ndim < 2 else r,
                                (len(cfs), len(nfs)))
            for (i, c), (j, f) in itertools.product(enumerate(cfs), enumerate(nfs)):
                cols["metric"].append(args.metric)
                cols["concept_freq"].append(np.nan if c is None else c)
                cols["neuron_freq"].append(np.nan if f is None else f)
                cols["n"].append(n)
                cols["radius"].append(float(r[i, j]))
        statement = (f"with probability >= {1 - args.delta:g}, |sim_hat - sim| <= radius for "
                     f"all {args.n_concepts} concept(s) at once")
    else:
        cols.update(epsilon=[], target=[], n=[])
        for eps, c, f in itertools.product(args.epsilon, cfs, nfs):
            n = required_samples(args.metric, eps, concept_freq=c, neuron_freq=f,
                                 target=args.target, **common)
            cols["metric"].append(args.metric)
            cols["concept_freq"].append(np.nan if c is None else c)
            cols["neuron_freq"].append(np.nan if f is None else f)
            cols["epsilon"].append(eps)
            cols["target"].append(args.target)
            cols["n"].append(int(n))
        statement = ("n = the smallest probing-set size whose planning bound reaches epsilon "
                     f"(target {args.target}, delta={args.delta:g}, {args.n_concepts} concept(s))")
    header = list(cols)
    body = [[str(v) if isinstance(v, str) else
             (str(v) if isinstance(v, (int, np.integer)) else _fmt(v, 4))
             for v in row] for row in zip(*cols.values())]
    print(format_table(header, body))
    print(statement)
    if args.out is not None:
        from ..results import write_table

        arrays = {k: (np.array(v, dtype=object) if k in ("metric", "target")
                      else np.asarray(v)) for k, v in cols.items()}
        write_table(args.out, arrays)
        print(f"table: {args.out}")
    return 0
