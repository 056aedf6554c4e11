"""Run the experiments: validate everything first, then compute, write, resume, index.

For each requested experiment (in the order of :data:`EXPERIMENTS`) the runner calls the
module's ``run`` with the child seed ``SeedSequence(seed)`` + ``(index,)`` (``index`` its
position in :data:`EXPERIMENTS`, so a seed does not depend on which experiments run),
then writes ``<name>.csv`` (:func:`neurocert.results.write_table`), ``<name>.png`` and
``<name>.svg`` (atomically: temporary sibling, then :func:`os.replace`), and records in
``manifest.json`` the seed, parameters, a hash of the parameters, timings, files, the
reading paragraph and the warnings. The manifest is rewritten (atomically) after every
experiment, so an interrupted run resumes from the finished ones: an experiment whose
three files exist and whose manifest entry has the same parameter hash and seed is
skipped. Finally ``index.md`` shows every figure with its reading.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import importlib
import json
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .._optional import require
from ..exceptions import NeurocertError, ValidationError
from ..results import atomic_path, atomic_write_bytes, make_manifest, write_table
from ._base import child_seed

__all__ = ["EXPERIMENTS", "load_experiment", "run_experiments"]

EXPERIMENTS: tuple[str, ...] = ("convergence", "theory", "selection", "stability", "coverage",
                                "cost")
"""Experiment names, in the order they run (and are shown in the index)."""

_MODULES = {"convergence": "convergence", "theory": "theory", "selection": "selection",
            "stability": "stability", "coverage": "coverage_exp", "cost": "cost"}
_KIND = "experiments"
_FILES = ("csv", "png", "svg")
_DPI = 130


# ---------------------------------------------------------------------------
# loading and validation


def load_experiment(name: str) -> ModuleType:
    """The module of experiment ``name``, checked against the contract of ``_base``."""
    if name not in _MODULES:
        raise ValidationError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    full = f"{__package__}.{_MODULES[name]}"
    try:
        mod = importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name != full:
            raise
        raise NeurocertError(
            f"experiment {name!r} is not available: module {full} is missing from this "
            "installation") from None
    problems = []
    for attr in ("NAME", "TITLE", "FIGURE"):
        if not isinstance(getattr(mod, attr, None), str):
            problems.append(f"{attr} (str)")
    params = getattr(mod, "PARAMS", None)
    if not (isinstance(params, dict) and isinstance(params.get("default"), dict)
            and isinstance(params.get("quick"), dict)):
        problems.append('PARAMS ({"default": {...}, "quick": {...}})')
    for attr in ("run", "plot", "reading"):
        if not callable(getattr(mod, attr, None)):
            problems.append(f"{attr}()")
    if problems:
        raise NeurocertError(f"experiment module {full} lacks {', '.join(problems)}")
    if mod.NAME != name:
        raise NeurocertError(f"experiment module {full} has NAME {mod.NAME!r}; expected {name!r}")
    return mod


def _names(which: Any) -> list[str]:
    if which is None:
        return list(EXPERIMENTS)
    if isinstance(which, str):
        which = [which]
    try:
        items = list(which)
    except TypeError:
        raise ValidationError(
            f"`which` must be None, a name or a list of names; got {which!r}") from None
    if not items:
        raise ValidationError(f"`which` is empty; known experiments: {', '.join(EXPERIMENTS)}")
    bad = [w for w in items if not isinstance(w, str) or w not in EXPERIMENTS]
    if bad:
        raise ValidationError(
            f"unknown experiment(s) {', '.join(map(repr, bad))}; known: {', '.join(EXPERIMENTS)}")
    return [e for e in EXPERIMENTS if e in set(items)]


def _params_json(name: str, params: Any) -> str:
    try:
        return json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{name}: parameters are not JSON-serialisable ({exc})") from None


def params_hash(params: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of an experiment's parameters."""
    return hashlib.sha256(_params_json("experiment", params).encode()).hexdigest()


def _check_seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValidationError(f"`seed` must be a non-negative integer; got {seed!r}")
    return int(seed)


def _read_manifest(path: Path) -> dict[str, Any]:
    """Entries of a previous run in ``path`` (empty when missing, foreign or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("kind") != _KIND:
        return {}
    entries = data.get("experiments")
    return entries if isinstance(entries, dict) else {}


# ---------------------------------------------------------------------------
# writing


def _save_figure(fig: Any, path: Path, fmt: str) -> None:
    kwargs: dict[str, Any] = {"format": fmt, "dpi": _DPI}
    if fmt == "svg":
        kwargs["metadata"] = {"Date": None}
    elif fmt == "png":
        kwargs["metadata"] = {"Software": None}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)


def _files(out: Path, name: str) -> dict[str, Path]:
    return {ext: out / f"{name}.{ext}" for ext in _FILES}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from .. import __version__

    return __version__


def _write_manifest(out: Path, *, seed: int, quick: bool, names: list[str],
                    params: dict[str, dict[str, Any]], entries: dict[str, Any],
                    wall: float) -> Path:
    timings = {n: float(e["seconds"]["total"]) for n, e in entries.items()}
    timings["this_run_wall"] = float(wall)
    manifest = make_manifest(
        _KIND, parameters={"quick": quick, "which": names, "experiments": params}, seed=seed,
        timings=timings,
        extra={"experiments": {n: entries[n] for n in EXPERIMENTS if n in entries}})
    path = out / "manifest.json"
    atomic_write_bytes(path, (json.dumps(manifest, indent=2, allow_nan=True) + "\n").encode())
    return path


def _fmt_s(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _write_index(out: Path, *, seed: int, entries: dict[str, Any], wall: float) -> Path:
    shown = [n for n in EXPERIMENTS if n in entries
             and all((out / Path(f).name).exists() for f in entries[n]["files"].values())]
    modes = sorted({entries[n]["mode"] for n in shown})
    total = sum(float(entries[n]["seconds"]["total"]) for n in shown)
    lines = [
        "# neurocert experiments",
        "",
        f"Synthetic evidence for certified neuron explanations, regenerated by "
        f"`neurocert experiments{' --quick' if modes == ['quick'] else ''} --seed {seed}` "
        "(Python: `neurocert.experiments.run_experiments`). Each figure has its table (CSV) "
        "beside it; `manifest.json` records every parameter, seed and timing.",
        "",
        f"- seed: {seed} (experiment *i* of {', '.join(EXPERIMENTS)} uses the child seed "
        f"`SeedSequence({seed}, spawn_key=(i,))`)",
        f"- neurocert version: {_version()}; Python {sys.version.split()[0]}, numpy "
        f"{np.__version__}",
        f"- run size: {', '.join(modes) if modes else 'none'}",
        f"- written: {_now()}; wall time of the last invocation: {_fmt_s(wall)}; compute time "
        f"of the experiments shown: {_fmt_s(total)}",
        "",
        "| # | experiment | reproduces | compute time | table | figure |",
        "|---|---|---|---|---|---|",
    ]
    for i, n in enumerate(shown, 1):
        e = entries[n]
        lines.append(f"| {i} | [{e['title']}](#{n}) | {e['figure'] or 'new'} | "
                     f"{_fmt_s(float(e['seconds']['total']))} | [{n}.csv]({n}.csv) | "
                     f"[png]({n}.png), [svg]({n}.svg) |")
    missing = [n for n in EXPERIMENTS if n not in shown]
    if missing:
        lines += ["", f"Not in this folder yet: {', '.join(missing)}."]
    for i, n in enumerate(shown, 1):
        e = entries[n]
        fig = f"the paper's {e['figure']}" if e["figure"] else "not in the paper (new evidence)"
        lines += [
            "",
            f'<a id="{n}"></a>',
            f"## {i}. {e['title']}",
            "",
            f"Reproduces: {fig}. Experiment `{n}`, {e['mode']} run, "
            f"{_fmt_s(float(e['seconds']['total']))}.",
            "",
            f"![{e['title']}]({n}.png)",
            "",
            f"[SVG]({n}.svg) · [table]({n}.csv)",
            "",
            e["reading"],
        ]
        if e.get("warnings"):
            lines += ["", "Warnings: " + " ".join(f"*{w}*" for w in e["warnings"])]
    path = out / "index.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


# ---------------------------------------------------------------------------
# the runner


def _announce(enabled: bool, text: str) -> None:
    if enabled:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def run_experiments(out_dir: str | Path, *, which: Any = None, quick: bool = False,
                    seed: int = 0, progress: bool = True, resume: bool = True) -> dict[str, Any]:
    """Run experiments and write their tables, figures, manifest and index.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created). Holds ``<name>.csv``, ``<name>.png``, ``<name>.svg`` per
        experiment, ``manifest.json`` and ``index.md``.
    which : str or list of str, optional
        Experiments to run (default all of :data:`EXPERIMENTS`); they run in that order.
    quick : bool
        Use each experiment's ``PARAMS["quick"]`` (about a minute for all) instead of
        ``PARAMS["default"]``.
    seed : int
        Run seed (``>= 0``); experiment ``i`` gets ``SeedSequence(seed, spawn_key=(i,))``.
        Tables are identical across runs with the same seed.
    progress : bool
        Progress bars and one status line per experiment on stderr.
    resume : bool
        Skip an experiment whose files exist and whose manifest entry has the same
        parameter hash and seed.

    Returns
    -------
    dict
        ``out_dir``, ``index``, ``manifest`` (paths), ``seed``, ``quick``, ``seconds`` (wall
        time) and ``experiments``: per name ``status`` (``"ran"`` or ``"resumed"``),
        ``seconds``, ``files``, ``title``, ``figure`` and ``reading``.

    Raises
    ------
    ValidationError
        Before any work or file is written: an unknown experiment name, a bad seed, a
        parameter an experiment's ``check`` rejects, or an output path that is a file.
    NeurocertError
        When a requested experiment's module is missing.
    OptionalDependencyError
        When matplotlib (figures) or pandas/pyarrow (tables) are not installed.
    """
    t_start = time.perf_counter()
    names = _names(which)
    seed = _check_seed(seed)
    if not isinstance(quick, (bool, np.bool_)):
        raise ValidationError(f"`quick` must be True or False; got {quick!r}")
    mode = "quick" if quick else "default"
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValidationError(f"output path {str(out)!r} exists and is not a directory")
    mods = {n: load_experiment(n) for n in names}
    params: dict[str, dict[str, Any]] = {}
    for n, mod in mods.items():
        p = copy.deepcopy(mod.PARAMS[mode])
        _params_json(n, p)
        check = getattr(mod, "check", None)
        if callable(check):
            check(p)
        params[n] = p
    for module, feature in (("matplotlib", "neurocert experiments (figures)"),
                            ("pandas", "neurocert experiments (tables)"),
                            ("pyarrow", "neurocert experiments (tables)")):
        require(module, feature)
    from ._base import pyplot

    plt = pyplot()
    plt.rcParams["svg.hashsalt"] = "neurocert"

    # -- all checks passed: work starts here
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    entries: dict[str, Any] = _read_manifest(manifest_path)
    # keep only previous entries whose files still exist (shown in the index)
    entries = {n: e for n, e in entries.items()
               if n in EXPERIMENTS and isinstance(e, dict)
               and all(p.exists() for p in _files(out, n).values())}
    report: dict[str, Any] = {}
    for k, n in enumerate(names, 1):
        mod = mods[n]
        index = EXPERIMENTS.index(n)
        h = params_hash(params[n])
        files = _files(out, n)
        old = entries.get(n)
        if (resume and old is not None and old.get("params_hash") == h
                and old.get("seed") == seed and all(p.exists() for p in files.values())):
            _announce(progress, f"[{k}/{len(names)}] {n}: finished earlier, resumed")
            report[n] = {"status": "resumed", "seconds": float(old["seconds"]["total"]),
                         "files": files, "title": old["title"], "figure": old["figure"],
                         "reading": old["reading"]}
            continue
        _announce(progress, f"[{k}/{len(names)}] {n} ({mod.FIGURE or 'new'}): {mod.TITLE}")
        entries.pop(n, None)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = mod.run(copy.deepcopy(params[n]), child_seed(np.random.SeedSequence(seed),
                                                                 index), progress)
            t_run = time.perf_counter() - t0
            write_table(files["csv"], table)
            t1 = time.perf_counter()
            fig = mod.plot(table, params[n])
            try:
                _save_figure(fig, files["png"], "png")
                _save_figure(fig, files["svg"], "svg")
            finally:
                plt.close(fig)
            text = " ".join(str(mod.reading(table, params[n])).split())
            t_plot = time.perf_counter() - t1
        seen: dict[tuple[type, str], warnings.WarningMessage] = {}
        for w in caught:
            seen.setdefault((w.category, str(w.message)), w)
        for w in seen.values():
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        total = time.perf_counter() - t0
        entries[n] = {
            "index": index, "title": mod.TITLE, "figure": mod.FIGURE, "mode": mode,
            "seed": seed, "spawn_key": [index], "params": params[n], "params_hash": h,
            "seconds": {"run": t_run, "plot": t_plot, "total": total},
            "rows": int(len(next(iter(table.values())))) if table else 0,
            "files": {ext: p.name for ext, p in files.items()},
            "reading": text,
            "warnings": [f"{c.__name__}: {m}" for (c, m) in seen],
            "completed": _now(),
        }
        _write_manifest(out, seed=seed, quick=bool(quick), names=names, params=params,
                        entries=entries, wall=time.perf_counter() - t_start)
        _announce(progress, f"[{k}/{len(names)}] {n}: done in {_fmt_s(total)}")
        report[n] = {"status": "ran", "seconds": total, "files": files, "title": mod.TITLE,
                     "figure": mod.FIGURE, "reading": text}
    wall = time.perf_counter() - t_start
    manifest_path = _write_manifest(out, seed=seed, quick=bool(quick), names=names,
                                    params=params, entries=entries, wall=wall)
    index_path = _write_index(out, seed=seed, entries=entries, wall=wall)
    return {"out_dir": out, "index": index_path, "manifest": manifest_path, "seed": seed,
            "quick": bool(quick), "seconds": wall, "experiments": report}
