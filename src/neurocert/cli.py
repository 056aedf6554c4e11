"""The ``neurocert`` command line.

``neurocert <subcommand> [options]``; each subcommand is a thin shell over one
library function and is added by registering it::

    def _add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n-boot", type=int, default=1000)

    @register("bootstrap", help="...", add_arguments=_add_arguments)
    def _run_bootstrap(args: argparse.Namespace) -> int | None:
        ...

Global options (before or after the subcommand): ``--seed``, ``--config``,
``--debug``, ``--no-progress``, ``--version``.

Configuration files (``--config FILE.toml``) set option defaults. Keys are
the long option names, with dashes or underscores; top-level keys apply to
every subcommand that has the option, a ``[subcommand]`` table to that
subcommand only (and wins over top-level keys). Options given on the command
line always win. Paths in the file are relative to the current directory.

Library errors (:class:`~neurocert.NeurocertError`, ``ValueError``,
``OSError``) print one line ``error: <message>`` on stderr and exit with 1;
``--debug`` also prints the traceback. Usage errors exit with 2 (argparse).
Warnings print as one line ``warning: <message>``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import NeurocertError, ValidationError

__all__ = ["REGISTRY", "Subcommand", "build_parser", "main", "register"]

PROG = "neurocert"
#: Rows of the neuron table printed by ``identify``.
DEFAULT_ROWS = 20


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class Subcommand:
    """One subcommand: a one-line help, its options, and the function that runs it.

    ``run(args)`` returns the exit code (``None`` means 0).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


REGISTRY: dict[str, Subcommand] = {}


def register(name: str, *, help: str,
             add_arguments: Callable[[argparse.ArgumentParser], None]) -> Callable:
    """Decorator registering ``run(args)`` as subcommand ``name``."""
    def decorator(run: Callable[[argparse.Namespace], int | None]):
        if name in REGISTRY:
            raise ValueError(f"subcommand {name!r} is already registered")
        REGISTRY[name] = Subcommand(name=name, help=help, add_arguments=add_arguments, run=run)
        return run
    return decorator


# --------------------------------------------------------------------------- #
# Parser
# --------------------------------------------------------------------------- #

def load_command_modules() -> None:
    """Import every module of :mod:`neurocert.commands`; each registers its subcommands.

    Subcommands that belong to an optional part of the library (reports, real
    pipelines, distributed runs) live there, one module per subcommand family,
    so that this file stays the registry and the shared helpers.
    """
    import importlib
    import pkgutil

    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}")


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # In subparsers the defaults are suppressed, so an option given before the
    # subcommand (or set by the config file) is not overwritten by a default.
    d = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    g = parser.add_argument_group("global options")
    g.add_argument("--seed", type=int, default=d(None), metavar="INT",
                   help="random seed (for subcommands that draw random numbers)")
    g.add_argument("--config", type=Path, default=d(None), metavar="FILE.toml",
                   help="TOML file with option defaults (top-level keys or a [subcommand] "
                        "table; command-line options win)")
    g.add_argument("--debug", action="store_true", default=d(False),
                   help="show the traceback of errors")
    g.add_argument("--no-progress", action="store_true", default=d(False),
                   help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with one subparser per registered subcommand.

    Options that a subcommand declares ``required=True`` are checked after the
    configuration file is applied (so they may come from it); their names are
    kept in the subparser's ``_neurocert_required`` attribute.
    """
    from . import __version__

    load_command_modules()
    parser = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False,
        description="Neuron explanations with certified faithfulness: label neurons with "
                    "concepts and say how much each label can be trusted.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for name in REGISTRY:
        cmd = REGISTRY[name]
        sp = sub.add_parser(name, help=cmd.help, description=cmd.help, allow_abbrev=False)
        cmd.add_arguments(sp)
        required = []
        for action in sp._actions:
            if action.option_strings and action.required:
                action.required = False
                action.help = f"{action.help or ''} (required; here or in --config)".lstrip()
                required.append(action)
        sp._neurocert_required = required  # type: ignore[attr-defined]
        _add_global_options(sp, suppress=True)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# --------------------------------------------------------------------------- #
# Configuration files
# --------------------------------------------------------------------------- #

_NOT_CONFIGURABLE = {"help", "version", "config"}


def _key(name: str) -> str:
    return name.lstrip("-").replace("-", "_")


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Configurable options of ``parser``: normalized long name -> action."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest not in _NOT_CONFIGURABLE:
            out[_key(longs[0])] = action
    return out


def _coerce(action: argparse.Action, value: Any, where: str) -> Any:
    if action.nargs == 0:  # flags
        if not isinstance(value, bool):
            raise ValidationError(f"{where} must be true or false; got {value!r}")
        return value
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise ValidationError(f"{where} must be a single value; got {value!r}")
    text = value if isinstance(value, str) else str(value)
    try:
        converted = action.type(text) if callable(action.type) else text
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise ValidationError(f"{where}: invalid value {value!r} ({exc})") from None
    if action.choices is not None and converted not in action.choices:
        raise ValidationError(
            f"{where} must be one of {', '.join(map(str, action.choices))}; got {value!r}")
    return converted


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML configuration file (one-line errors)."""
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"config file {str(p)!r} does not exist")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"config file {str(p)!r} is not valid TOML: {exc}") from None


def _apply_config(parser: argparse.ArgumentParser, command: str, config: dict[str, Any],
                  path: Path) -> None:
    """Turn ``config`` into parser defaults for ``command`` (command line still wins)."""
    subparsers = _subparsers(parser)
    sp = subparsers[command]
    global_opts = _options(parser)
    own = {k: a for k, a in _options(sp).items() if k not in global_opts}
    everyone = set(global_opts)
    for other in subparsers.values():
        everyone |= set(_options(other))

    values: dict[str, tuple[argparse.Action, Any, str]] = {}
    top = {k: v for k, v in config.items() if not isinstance(v, dict)}
    for key, value in top.items():
        k = _key(key)
        if k not in everyone:
            raise ValidationError(f"config file {str(path)!r}: unknown option {key!r}")
        action = global_opts.get(k) or own.get(k)
        if action is not None:  # else: an option of another subcommand
            values[k] = (action, value, f"config key {key!r}")
    for table, entries in config.items():
        if not isinstance(entries, dict):
            continue
        if table not in subparsers:
            raise ValidationError(
                f"config file {str(path)!r}: unknown section [{table}]; subcommands: "
                f"{', '.join(subparsers)}")
        table_own = {k: a for k, a in _options(subparsers[table]).items()
                     if k not in global_opts}
        for key, value in entries.items():  # every table is checked, one is applied
            k = _key(key)
            action = global_opts.get(k) or table_own.get(k)
            if action is None:
                raise ValidationError(
                    f"config file {str(path)!r}: [{table}] has unknown option {key!r}; "
                    f"options: {', '.join(sorted(table_own))}")
            if table == command:
                values[k] = (action, value, f"config key [{table}] {key!r}")
    for k, (action, value, where) in values.items():
        target = parser if k in global_opts else sp
        target.set_defaults(**{action.dest: _coerce(action, value, where)})


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    first = parser.parse_args(argv)
    if first.config is None:
        args = first
    else:
        _apply_config(parser, first.command, load_config(first.config), Path(first.config))
        args = parser.parse_args(argv)
        # A command-line choice in a mutually exclusive group drops config values of the others.
        sp = _subparsers(parser)[args.command]
        for group in sp._mutually_exclusive_groups:
            given = [a.dest for a in group._group_actions
                     if getattr(first, a.dest, None) not in (None, a.default)]
            if given:
                for a in group._group_actions:
                    if a.dest not in given:
                        setattr(args, a.dest, None)
    sp = _subparsers(parser)[args.command]
    missing = [a for a in sp._neurocert_required if getattr(args, a.dest, None) is None]
    if missing:
        names = ", ".join(a.option_strings[-1] for a in missing)
        sp.error(f"the following arguments are required: {names} "
                 "(on the command line or in the --config file)")
    return args


# --------------------------------------------------------------------------- #
# Shared helpers of the subcommands
# --------------------------------------------------------------------------- #

def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(f"warning: {_one_line(message)}\n")


def _fmt(x: float, digits: int = 3) -> str:
    x = float(x)
    if np.isnan(x):
        return "nan"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 10 ** -digits):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: left-aligned text, right-aligned numbers."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def numeric(s: str) -> bool:
        return s[:1].isdigit() or s[:1] in "-+[." or s in ("nan", "inf")

    right = [bool(rows) and all(numeric(r[i]) for r in rows) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def neuron_table(result, certified: np.ndarray, *, planted: Sequence[str] | None = None,
                 rows: int | None = None) -> str:
    """The per-neuron table printed by ``demo`` and ``identify``."""
    n = result.n_neurons if rows is None else min(rows, result.n_neurons)
    idx = np.arange(result.n_neurons)
    null = result.null[idx, np.maximum(result.best, 0)]
    null = np.where(result.best >= 0, null, np.nan)
    header = ["neuron"] + (["planted"] if planted is not None else []) + [
        "label", "similarity", "[lower, upper]", "null", "set size", "regret", "certified"]
    labels = result.labels
    body = []
    for j in range(n):
        row = [result.neuron_names[j]]
        if planted is not None:
            row.append(planted[j] or "(none)")
        row += [labels[j] or "(undefined)", _fmt(result.best_similarity[j]),
                f"[{_fmt(result.best_lower[j])}, {_fmt(result.best_upper[j])}]",
                _fmt(null[j]), str(len(result.certified_sets[j])),
                _fmt(result.regret_bound[j]), "yes" if certified[j] else "no"]
        body.append(row)
    table = format_table(header, body)
    if n < result.n_neurons:
        table += f"\n... {result.n_neurons - n} more neurons"
    return table


def _read_array(path: Path, key: str | None = None) -> np.ndarray:
    from .results import read_array_file

    return read_array_file(path, key=key)


def _read_vector(path: Path | None, what: str) -> np.ndarray | None:
    """A per-sample vector from any array file; a single-column table is flattened."""
    if path is None:
        return None
    a = np.asarray(_read_array(path))
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValidationError(
            f"{what} file {str(path)!r} must hold one column; got shape {a.shape}")
    return a


def _read_names(path: Path | None) -> list[str] | None:
    from .results import read_names_file

    return None if path is None else read_names_file(path)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """Inputs shared by ``similarity`` and ``identify``."""
    p.add_argument("activations", type=Path, metavar="ACTIVATIONS",
                   help="(n_samples, n_neurons) array: .npy, .npz, .parquet or .csv")
    p.add_argument("concepts", type=Path, metavar="CONCEPTS",
                   help="(n_samples, n_concepts) array of values in [0, 1]")
    p.add_argument("--metric", required=True, metavar="M",
                   help="similarity metric, e.g. auroc, iou, f1, precision, recall, accuracy, "
                        "balanced_accuracy, wpmi, average_precision, correlation, cosine, mad")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="count metrics: the neuron is active where activation > T")
    b.add_argument("--top-frac", type=float, default=None, metavar="Q",
                   help="count metrics: the neuron is active on its top Q share of samples "
                        "(NetDissect: 0.005)")
    p.add_argument("--sample-weight", type=Path, default=None, metavar="FILE",
                   help="(n_samples,) non-negative weights")
    p.add_argument("--groups", type=Path, default=None, metavar="FILE",
                   help="(n_samples,) independent unit of each sample (image, document)")
    p.add_argument("--truth", choices=("concept", "neuron"), default="concept",
                   help="which side is the ground truth for precision/recall (default: concept)")
    p.add_argument("--wpmi-lambda", type=float, default=1.0, metavar="L",
                   help="weight of log p(concept) in wpmi (default: 1)")
    p.add_argument("--key-activations", default=None, metavar="K",
                   help="array name inside an .npz activations file")
    p.add_argument("--key-concepts", default=None, metavar="K",
                   help="array name inside an .npz concepts file")
    add_backend_arguments(p, "memory (default); blocks: stream neuron blocks out of core (a "
                             "Zarr directory or .npy activations are read a block at a time); "
                             "dask: run the blocks on a Dask cluster (identical results; "
                             "docs/distributed.md)")


def add_backend_arguments(p: argparse.ArgumentParser, backend_help: str) -> None:
    """``--backend {memory,blocks,dask}`` and ``--scheduler ADDR`` of a subcommand."""
    p.add_argument("--backend", choices=("memory", "blocks", "dask"), default="memory",
                   help=backend_help)
    p.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="with --backend dask: scheduler address, e.g. tcp://10.0.0.1:8786 "
                        "(default: a local cluster of this machine)")


def _load_inputs(args: argparse.Namespace) -> dict[str, Any]:
    from .storage import is_zarr_path

    backend = getattr(args, "backend", "memory")
    if args.scheduler is not None and backend != "dask":
        raise ValidationError("--scheduler needs --backend dask")
    if is_zarr_path(args.activations) or (backend != "memory"
                                           and args.activations.suffix == ".npy"):
        if backend == "memory":
            raise ValidationError(f"{args.activations} is a Zarr store: pass --backend blocks "
                                  "(out of core) or --backend dask")
        activations: Any = str(args.activations)  # read one neuron block at a time
    else:
        activations = _read_array(args.activations, args.key_activations)
    return {
        "activations": activations,
        "concepts": _read_array(args.concepts, args.key_concepts),
        "sample_weight": _read_vector(args.sample_weight, "--sample-weight"),
        "groups": _read_vector(args.groups, "--groups"),
    }


def _input_hashes(inputs: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of in-memory inputs; a store read by blocks is recorded by its path."""
    from .results import array_sha256

    return {k: (f"path:{v}" if isinstance(v, str) else array_sha256(v))
            for k, v in inputs.items() if v is not None}


def _binarization(args: argparse.Namespace) -> dict[str, Any]:
    return {"threshold": args.threshold, "top_frac": args.top_frac, "truth": args.truth,
            "wpmi_lambda": args.wpmi_lambda, "backend": args.backend, "client": args.scheduler}


# --------------------------------------------------------------------------- #
# demo
# --------------------------------------------------------------------------- #

def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("neurocert-out") / "demo", metavar="DIR",
                   help="results directory (default: ./neurocert-out/demo)")
    p.add_argument("--metric", default="auroc", metavar="M",
                   help="similarity metric (default: auroc)")
    p.add_argument("--n-samples", type=int, default=20_000, metavar="N",
                   help="probing samples (default: 20000)")
    p.add_argument("--n-neurons", type=int, default=30, metavar="N",
                   help="neurons, the last 20%% pure noise (default: 30)")
    p.add_argument("--n-concepts", type=int, default=20, metavar="N",
                   help="concepts, frequencies geometric from 0.3 to 0.003 (default: 20)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="count metrics: binarize at activation > T")
    b.add_argument("--top-frac", type=float, default=None, metavar="Q",
                   help="count metrics: top Q share of samples (default for count metrics: 0.005)")
    p.add_argument("--delta", type=float, default=0.05, help="failure probability (default: 0.05)")
    p.add_argument("--level", type=float, default=None,
                   help="certify labels whose lower limit exceeds this (default: 0.5 for auroc, "
                        "0.04 for iou, else 0)")
    p.add_argument("--multiplicity", choices=("none", "fwer", "fdr"), default="fdr",
                   help="correction over neurons (default: fdr)")
    p.add_argument("--csv", action="store_true", help="also write CSV copies of the tables")


@register("demo", help="identify planted concepts in a simulated layer and certify the labels",
          add_arguments=_demo_arguments)
def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    seed = 0 if args.seed is None else args.seed
    demo = run_demo(n_samples=args.n_samples, n_neurons=args.n_neurons,
                    n_concepts=args.n_concepts, metric=args.metric, delta=args.delta,
                    threshold=args.threshold, top_frac=args.top_frac, level=args.level,
                    multiplicity=args.multiplicity, seed=seed, out=args.out, csv=args.csv)
    p = demo.parameters
    freq = p["concept_freq"]
    binar = (f", threshold={p['threshold']:g}" if p["threshold"] is not None else "") + \
            (f", top_frac={p['top_frac']:g}" if p["top_frac"] is not None else "")
    print(f"neurocert demo: {p['n_samples']} samples, {p['n_neurons']} neurons "
          f"({p['n_planted']} planted, {p['n_neurons'] - p['n_planted']} pure noise), "
          f"{p['n_concepts']} concepts (frequency {freq[0]:g} down to {freq[-1]:.2g})")
    print(f"  planted neuron j responds to concept j mod {p['n_concepts']} with mean shift "
          f"3, 2, 1, 0.5 (cycling); metric={p['metric']}{binar}, delta={p['delta']:g}, "
          f"level={p['level']:g}, multiplicity={p['multiplicity']}, seed={p['seed']}")
    print()
    print(neuron_table(demo.result, demo.summary.certified, planted=demo.planted_names))
    print()
    print(demo.summary)
    n_noise = p["n_neurons"] - p["n_planted"]
    print(f"label = planted concept for {int(demo.correct.sum())} of {demo.n_planted} planted "
          f"neurons ({demo.share_correct:.0%}); {demo.n_noise_certified} of {n_noise} noise "
          "neurons certified")
    print(f"results: {demo.path}")
    return 0


# --------------------------------------------------------------------------- #
# similarity
# --------------------------------------------------------------------------- #

def _similarity_arguments(p: argparse.ArgumentParser) -> None:
    _add_data_arguments(p)
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help=".npy (the (n_neurons, n_concepts) matrix) or .parquet/.csv (tidy "
                        "table with columns neuron, concept, similarity)")


def _check_similarity_out(path: Path) -> None:
    if path.suffix.lower() not in (".npy", ".parquet", ".csv"):
        raise ValidationError(
            f"--out {str(path)!r}: unsupported extension {path.suffix or '(none)'!r}; "
            "use .npy, .parquet or .csv")


def write_similarity(path: Path, values: np.ndarray) -> Path:
    """Write a similarity matrix as .npy, or as a tidy .parquet/.csv table."""
    from .results import atomic_path, write_table

    _check_similarity_out(path)
    if path.suffix.lower() == ".npy":
        with atomic_path(path) as tmp:
            np.save(tmp, values)
        return path
    n, c = values.shape
    return write_table(path, {"neuron": np.repeat(np.arange(n, dtype=np.int64), c),
                              "concept": np.tile(np.arange(c, dtype=np.int64), n),
                              "similarity": values.reshape(-1)})


@register("similarity", help="similarity of every neuron with every concept",
          add_arguments=_similarity_arguments)
def _run_similarity(args: argparse.Namespace) -> int:
    from .similarity import similarity

    _check_similarity_out(args.out)  # fail before the work
    inputs = _load_inputs(args)
    values = similarity(inputs["activations"], inputs["concepts"], metric=args.metric,
                        sample_weight=inputs["sample_weight"], groups=inputs["groups"],
                        **_binarization(args))
    write_similarity(args.out, values)
    print(f"wrote {values.shape[0]} x {values.shape[1]} {args.metric} similarities to {args.out}")
    return 0


# --------------------------------------------------------------------------- #
# identify
# --------------------------------------------------------------------------- #

def _identify_arguments(p: argparse.ArgumentParser) -> None:
    _add_data_arguments(p)
    p.add_argument("--delta", type=float, default=0.05,
                   help="failure probability of the confidence limits (default: 0.05)")
    p.add_argument("--concept-names", type=Path, default=None, metavar="FILE",
                   help="concept names, one per line (.txt), or a one-column .csv/.parquet")
    p.add_argument("--neuron-names", type=Path, default=None, metavar="FILE",
                   help="neuron names, same formats")
    p.add_argument("--top-k", type=int, default=5, metavar="K",
                   help="ranked concepts kept per neuron (default: 5)")
    p.add_argument("--level", type=float, default=None,
                   help="certify labels whose lower limit exceeds this (default: 0.5 for auroc "
                        "and balanced_accuracy, 0.04 for iou, else 0)")
    p.add_argument("--multiplicity", choices=("none", "fwer", "fdr"), default="fdr",
                   help="correction over neurons for the summary (default: fdr)")
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS, metavar="N",
                   help=f"neurons shown in the printed table (default: {DEFAULT_ROWS})")
    p.add_argument("--csv", action="store_true", help="also write CSV copies of the tables")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="results directory")


@register("identify", help="label each neuron with a concept and certify the label",
          add_arguments=_identify_arguments)
def _run_identify(args: argparse.Namespace) -> int:
    from .demo import default_level
    from .identify import identify

    inputs = _load_inputs(args)
    result = identify(inputs["activations"], inputs["concepts"], metric=args.metric,
                      delta=args.delta, concept_names=_read_names(args.concept_names),
                      neuron_names=_read_names(args.neuron_names), top_k=args.top_k,
                      sample_weight=inputs["sample_weight"], groups=inputs["groups"],
                      **_binarization(args))
    result.parameters["input_hashes"] = _input_hashes(inputs)
    result.parameters["inputs"] = {k: str(getattr(args, k)) for k in inputs
                                   if getattr(args, k) is not None}
    if args.seed is not None:
        result.parameters["seed"] = args.seed
    level = default_level(result.metric) if args.level is None else args.level
    summary = result.summary(level, multiplicity=args.multiplicity)
    path = result.save(args.out, csv=args.csv)
    print(neuron_table(result, summary.certified, rows=max(args.rows, 0)))
    print()
    print(summary)
    print(f"results: {path}")
    return 0


# --------------------------------------------------------------------------- #
# explain (bootstrap ensembles and BE prediction sets)
# --------------------------------------------------------------------------- #

def _explain_arguments(p: argparse.ArgumentParser) -> None:
    _add_data_arguments(p)
    p.add_argument("--n-boot", type=int, default=1000, metavar="B",
                   help="bootstrap replicates (default: 1000; the maximum with --adaptive)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="miscoverage of the prediction sets (default: 0.05)")
    p.add_argument("--delta", type=float, default=0.05,
                   help="failure probability of the certified set (default: 0.05)")
    p.add_argument("--mode", choices=("bootstrap", "split", "both"), default="both",
                   help="bootstrap set (nominal coverage), split-conformal set (exact coverage "
                        "of a fold-size explanation) or both (default: both)")
    p.add_argument("--n-folds", type=int, default=None, metavar="K",
                   help="folds of split mode (default: ceil(2/alpha) - 1)")
    p.add_argument("--scheme", choices=("multinomial", "poisson", "predictive"),
                   default="multinomial", help="bootstrap weights (default: multinomial)")
    p.add_argument("--no-prune", action="store_true",
                   help="evaluate every concept in every replicate (slower, same result "
                        "except with probability <= --prune-epsilon per replicate)")
    p.add_argument("--prune-epsilon", type=float, default=1e-4, metavar="E",
                   help="failure probability of candidate pruning per replicate (default: 1e-4)")
    p.add_argument("--guard", action="store_true",
                   help="widen each BE set by the confidence limits: add every concept whose "
                        "upper limit reaches the label's similarity (nominal coverage also "
                        "with rare concepts; larger sets)")
    p.add_argument("--adaptive", action="store_true",
                   help="stop early once the prediction sets are stable")
    p.add_argument("--concept-names", type=Path, default=None, metavar="FILE",
                   help="concept names, one per line (.txt), or a one-column .csv/.parquet")
    p.add_argument("--neuron-names", type=Path, default=None, metavar="FILE",
                   help="neuron names, same formats")
    p.add_argument("--top-k", type=int, default=5, metavar="K",
                   help="concepts with descriptive bootstrap intervals (default: 5)")
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS, metavar="N",
                   help=f"neurons shown in the printed table (default: {DEFAULT_ROWS})")
    p.add_argument("--csv", action="store_true", help="also write CSV copies of the tables")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="results directory")


def explanation_table(result, rows: int) -> str:
    """Printable per-neuron table of an :class:`~neurocert.ExplanationResult`."""
    ident = result.identification

    def members(s, probs=True):
        names = result._names(s)
        if not probs:
            return ", ".join(names[:4]) + (f" +{len(names) - 4}" if len(names) > 4 else "")
        shown = [f"{nm} {result._prob(j_row, i):.2f}" for nm, i in zip(names[:3], s[:3])]
        return ", ".join(shown) + (f" +{len(s) - 3}" if len(s) > 3 else "")

    header = ["neuron", "label", "similarity", "[lower, upper]", "BE set (probability)",
              "mode freq", "certified set"]
    if result.split_sets is not None and result.mode == "both":
        header.append("split set")
    body = []
    for j_row in range(min(rows, len(result.set_size))):
        row = [ident.neuron_names[j_row], ident.labels[j_row] or "(none)",
               _fmt(ident.best_similarity[j_row]),
               f"[{_fmt(ident.best_lower[j_row])}, {_fmt(ident.best_upper[j_row])}]",
               members(result.prediction_sets[j_row]),
               _fmt(result.mode_frequency[j_row], 2),
               members(result.certified_sets[j_row], probs=False)]
        if len(header) == 8:
            row.append(members(result.split_sets[j_row], probs=False))
        body.append(row)
    return format_table(header, body)


@register("explain", help="bootstrap ensemble and BE concept prediction sets per neuron",
          add_arguments=_explain_arguments)
def _run_explain(args: argparse.Namespace) -> int:
    from .bootstrap import bootstrap_explain

    inputs = _load_inputs(args)
    checkpoint = args.out.parent / f".{args.out.name}.checkpoint.npz"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    result = bootstrap_explain(
        inputs["activations"], inputs["concepts"], metric=args.metric, n_boot=args.n_boot,
        alpha=args.alpha, delta=args.delta, rng=args.seed, mode=args.mode,
        n_folds=args.n_folds, scheme=args.scheme, prune=not args.no_prune,
        prune_epsilon=args.prune_epsilon, guard=args.guard, adaptive=args.adaptive,
        top_k=args.top_k, concept_names=_read_names(args.concept_names),
        neuron_names=_read_names(args.neuron_names), sample_weight=inputs["sample_weight"],
        groups=inputs["groups"],
        checkpoint=checkpoint if args.seed is not None and args.backend == "memory" else None,
        progress_bar=not args.no_progress, **_binarization(args))
    result.parameters["input_hashes"] = _input_hashes(inputs)
    path = result.save(args.out, csv=args.csv)
    if checkpoint.exists():
        checkpoint.unlink()
    print(explanation_table(result, max(args.rows, 0)))
    print()
    print(f"{result.n_boot} replicates, alpha={result.alpha:g}: median BE set size "
          f"{np.median(result.set_size):g}, {int(np.sum(result.set_size == 1))} of "
          f"{len(result.set_size)} neurons with a single-concept set; coverage target: "
          f"{result.coverage_target}")
    print(f"seed entropy: {result.parameters['seed_entropy']} (pass --seed to make a run "
          "resumable and reproducible)" if args.seed is None else f"seed: {args.seed}")
    print(f"results: {path}")
    return 0


# --------------------------------------------------------------------------- #
# experiments
# --------------------------------------------------------------------------- #

def _experiments_arguments(p: argparse.ArgumentParser) -> None:
    from .experiments import EXPERIMENTS

    p.add_argument("--out", type=Path, default=Path("neurocert-out") / "experiments",
                   metavar="DIR", help="output folder (default: ./neurocert-out/experiments)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (about a minute for all experiments; used in CI)")
    p.add_argument("--only", nargs="+", action="extend", default=None, metavar="NAME",
                   help=f"run only these experiments (of: {', '.join(EXPERIMENTS)})")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute experiments that a previous run already finished")


@register("experiments", help="regenerate the paper's synthetic experiments: figures, tables "
                              "and an index",
          add_arguments=_experiments_arguments)
def _run_experiments(args: argparse.Namespace) -> int:
    from .experiments import run_experiments

    seed = 0 if args.seed is None else args.seed
    res = run_experiments(args.out, which=args.only, quick=args.quick, seed=seed,
                          progress=not args.no_progress, resume=not args.no_resume)
    rows = [[name, e["figure"] or "new", e["status"], f"{e['seconds']:.1f}"]
            for name, e in res["experiments"].items()]
    print(format_table(["experiment", "reproduces", "status", "seconds"], rows))
    print(f"{'quick' if res['quick'] else 'default'} run, seed {res['seed']}, "
          f"{res['seconds']:.1f} s in all")
    print(f"index: {res['index']}")
    return 0


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #

def _wants_debug(argv: list[str]) -> bool:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--debug", action="store_true")
    try:
        return pre.parse_known_args(argv)[0].debug
    except SystemExit:  # pragma: no cover - cannot fail with one flag
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse exits 2 on usage errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _wants_debug(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            parser = build_parser()
            args = _parse(parser, argv)
            debug = debug or bool(args.debug)
            code = REGISTRY[args.command].run(args)
            sys.stdout.flush()
            return 0 if code is None else int(code)
        except (NeurocertError, ValueError, OSError) as exc:
            sys.stdout.flush()
            if debug:
                traceback.print_exc()
            message = _one_line(exc) or type(exc).__name__
            print(f"error: {message}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
