"""The self-contained HTML report and the notebook views.

The report is one file: inline CSS, inline script, inline SVG and images as
``data:`` URIs; it needs no server and no network. The layer summary is
rendered here (every name escaped with :func:`html.escape`); the neuron cards
are built in the browser from a JSON block with DOM text nodes, so no concept
or neuron name is ever parsed as markup, and they are filled lazily as they
scroll into view, which keeps a 2,048-neuron report fast to open.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ValidationError
from ._assets import CSS, JS
from ._exemplars import ImageExemplar, TextExemplar, image_data_uri, mask_data_uri
from ._layer import NONE_NAME, VERDICTS, LayerResults, MethodSummary

__all__ = ["explanation_html", "layer_html", "render_report", "write_report"]

#: bit flags of a concept row in the report data
_BOOT, _SPLIT, _CERT, _LABEL, _TOP = 1, 2, 4, 8, 16
_VERDICT_TEXT = {"stable": "stable", "unstable": "unstable", "not_certified": "not certified",
                 "none": "no concept"}


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def _num(values: Any, digits: int = 4) -> list:
    """JSON-ready floats with ``digits`` significant digits; NaN and infinities -> null."""
    out = []
    for v in np.asarray(values, dtype=np.float64).tolist():
        out.append(float(f"{v:.{digits}g}") if math.isfinite(v) else None)
    return out


def _script_json(obj: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>``, ``&`` and line separators escaped."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _fmt(x: float, digits: int = 3) -> str:
    x = float(x)
    if not math.isfinite(x):
        return "\u2013"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 10 ** -digits):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}"


# --------------------------------------------------------------------------- #
# Report data
# --------------------------------------------------------------------------- #

def _method_data(layer: LayerResults, info: MethodSummary, concept_ids: dict[str, int],
                 max_concepts: int) -> dict[str, Any]:
    n = layer.n_neurons
    nt = layer.neuron_rows(info.name)
    # original neuron index -> position in this (possibly selected) layer
    original = nt["neuron_index"]
    posarr = np.full(int(original.max()) + 1 if n else 0, -1, np.int64)
    posarr[original] = np.arange(n)
    inv = np.empty(n, np.int64)
    inv[posarr[original]] = np.arange(n)

    def col(key: str) -> np.ndarray:
        return nt[key][inv]

    label = np.array([concept_ids[x] if ci >= 0 else -1
                      for x, ci in zip(col("label"), col("concept_index"))], np.int64)
    verdict_idx = np.array([VERDICTS.index(v) for v in col("verdict")], np.int64)

    pm = layer.pairs["method"] == info.name
    p = {k: v[pm] for k, v in layer.pairs.items()}
    rows_pos = posarr[p["neuron_index"]]
    prob = np.nan_to_num(p["probability"], nan=-1.0)
    flags = (p["in_bootstrap_set"] * _BOOT + p["in_split_set"] * _SPLIT
             + p["in_certified_set"] * _CERT + p["is_label"] * _LABEL + p["in_top_k"] * _TOP)
    # keep the label, then the most probable, then the best ranked concepts of each neuron
    sel = np.lexsort((p["rank"], -prob, ~p["is_label"], rows_pos))
    grp = rows_pos[sel]
    start = np.searchsorted(grp, np.arange(n))
    within = np.arange(len(sel)) - start[grp]
    keep = sel[within < max_concepts]
    counts = np.bincount(rows_pos, minlength=n)
    more = np.maximum(counts - max_concepts, 0)
    # shown in order of probability, then similarity rank
    keep = keep[np.lexsort((p["rank"][keep], -prob[keep], rows_pos[keep]))]
    off = np.concatenate([[0], np.cumsum(np.bincount(rows_pos[keep], minlength=n))])
    cid = np.array([concept_ids[x] if ci >= 0 else -1
                    for x, ci in zip(p["concept"][keep], p["concept_index"][keep])], np.int64)

    vals = np.concatenate([p[k][keep] for k in ("similarity", "lower", "upper", "null")]
                          + [col(k) for k in ("similarity", "lower", "upper", "null")])
    finite = vals[np.isfinite(vals)]
    lo_ax = float(finite.min()) if finite.size else 0.0
    hi_ax = float(finite.max()) if finite.size else 1.0
    if lo_ax >= 0 and hi_ax <= 1:  # bounded similarities: show the whole [0, 1] scale
        lo_ax, hi_ax = 0.0, 1.0
    return {
        "name": info.name, "metric": info.metric, "kind": info.kind,
        "delta": None if not math.isfinite(info.delta) else info.delta,
        "alpha": None if not math.isfinite(info.alpha) else info.alpha,
        "level": info.level, "multiplicity": info.multiplicity,
        "setName": info.set_label if info.kind == "explanation" else "bootstrap set",
        "hasSplit": bool(np.any(col("split_set_size") > 0)),
        "axis": [lo_ax, hi_ax],
        "n": {
            "label": label.tolist(), "sim": _num(col("similarity")), "lo": _num(col("lower")),
            "hi": _num(col("upper")), "nul": _num(col("null")),
            "cert": col("certified").astype(int).tolist(), "v": verdict_idx.tolist(),
            "vt": [str(x) for x in col("verdict_text")], "ss": col("set_size").tolist(),
            "bs": col("bootstrap_set_size").tolist(), "sp": col("split_set_size").tolist(),
            "cs": col("certified_set_size").tolist(), "mf": _num(col("mode_frequency")),
            "rg": _num(col("regret_bound")),
        },
        "r": {
            "off": off.tolist(), "c": cid.tolist(), "p": _num(p["probability"][keep]),
            "s": _num(p["similarity"][keep]), "lo": _num(p["lower"][keep]),
            "hi": _num(p["upper"][keep]), "nu": _num(p["null"][keep]),
            "f": flags[keep].astype(int).tolist(), "more": more.tolist(),
        },
    }


def _exemplar_data(provider: Callable[[int], Sequence[Any]], layer: LayerResults,
                   neuron_index: Sequence[int], *, size: int, quality: int):
    images: dict[str, str] = {}
    keys: dict[Any, str] = {}
    per_neuron = []
    for j in neuron_index:
        items = []
        for ex in provider(int(j)) or ():
            if isinstance(ex, ImageExemplar):
                if ex.key not in keys:
                    keys[ex.key] = str(len(keys))
                    images[keys[ex.key]] = image_data_uri(ex.image, size=size, quality=quality)
                item = {"t": "i", "s": keys[ex.key], "c": str(ex.caption)}
                if ex.mask is not None:
                    item["m"] = mask_data_uri(ex.mask)
                items.append(item)
            elif isinstance(ex, TextExemplar):
                w = np.asarray(ex.weights, np.float64)
                if len(w) != len(ex.tokens):
                    raise ValidationError(
                        f"neuron {j}: a text exemplar has {len(ex.tokens)} tokens but "
                        f"{len(w)} weights")
                items.append({"t": "x", "k": [str(t) for t in ex.tokens],
                              "w": [round(float(x), 2) if math.isfinite(x) else 0.0 for x in w],
                              "c": str(ex.caption)})
            else:
                raise ValidationError(
                    "an exemplar provider must return ImageExemplar or TextExemplar objects; "
                    f"got {type(ex).__name__}")
        per_neuron.append(items)
    return per_neuron, images


# --------------------------------------------------------------------------- #
# Summary (server-side, escaped)
# --------------------------------------------------------------------------- #

def _histogram_svg(labels: Sequence[str], counts: Sequence[int], *, title: str,
                   color: str = "#2f6fde") -> str:
    w_bar, gap, h_max, top = 34, 6, 80, 16
    width = len(labels) * (w_bar + gap) + gap
    height = top + h_max + 30
    peak = max(max(counts, default=0), 1)
    parts = [(f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
             f' role="img"><title>{_e(title)}</title>')]
    for i, (lab, c) in enumerate(zip(labels, counts)):
        h = h_max * c / peak
        x = gap + i * (w_bar + gap)
        y = top + h_max - h
        parts.append(f'<rect x="{x}" y="{y:.1f}" width="{w_bar}" height="{h:.1f}" '
                     f'fill="{color}"><title>{_e(lab)}: {c}</title></rect>')
        parts.append(f'<text x="{x + w_bar / 2}" y="{y - 3:.1f}" font-size="10" '
                     f'text-anchor="middle">{c}</text>')
        parts.append(f'<text x="{x + w_bar / 2}" y="{top + h_max + 13}" font-size="10" '
                     f'text-anchor="middle">{_e(lab)}</text>')
    parts.append(f'<text x="{gap}" y="{height - 2}" font-size="10" fill="#5f6b7a">'
                 f'{_e(title)}</text></svg>')
    return "".join(parts)


def _set_size_hist(sizes: np.ndarray) -> tuple[list[str], list[int]]:
    labels = ["0", "1", "2", "3", "4", "5", "6\u201310", ">10"]
    edges = [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 10), (11, np.inf)]
    counts = [int(np.sum((sizes >= a) & (sizes <= b))) for a, b in edges]
    if counts[0] == 0:
        labels, counts = labels[1:], counts[1:]
    return labels, counts


def _method_panel(layer: LayerResults, info: MethodSummary) -> str:
    nt = layer.neuron_rows(info.name)
    vc = layer.verdict_counts(info.name)
    pills = "".join(f'<span class="pill v-{v}">{_e(_VERDICT_TEXT[v])}: {vc[v]}</span>'
                    for v in VERDICTS)
    if info.multiplicity == "none":
        expected = (f"Expected number of false certifications \u2264 \u03b4 \u00d7 neurons = "
                    f"{info.delta:g} \u00d7 {info.n_layer_neurons} = "
                    f"{info.delta * info.n_layer_neurons:.3g}.")
    elif info.multiplicity == "fwer":
        expected = (f"Holm over the {info.n_layer_neurons} neurons: the probability of even one "
                    f"false certification is \u2264 {info.delta:g}.")
    else:
        expected = (f"Benjamini\u2013Yekutieli over the {info.n_layer_neurons} neurons: the "
                    f"expected share of false certifications is \u2264 {info.delta:g} (about "
                    f"{info.delta * info.n_certified:.3g} of the {info.n_certified} certified "
                    "labels).")
    what = (f"{info.n_boot} bootstrap replicates, {info.set_label} (mode {info.mode}): "
            f"covers the {info.coverage_target}" if info.kind == "explanation"
            else "no bootstrap: certified sets only")
    out = [f'<div class="panel" data-method="{_e(info.name)}">',
           (f"<h3>{_e(info.name)} <span class='muted small'>({_e(info.metric)}, "
           f"n = {info.n_samples}, {info.n_groups:g} independent units, "
           f"{info.n_concepts} concepts)</span></h3>"),
           (f"<p class='headline'><b>{info.n_certified} of {info.n_neurons}</b> neurons have a "
           f"certified label: lower confidence limit &gt; {info.level:g} at \u03b4 = "
           f"{info.delta:g}, multiplicity correction <b>{_e(info.multiplicity)}</b>.</p>"),
           f"<p class='small'>{_e(expected)}</p>",
           f"<p class='small muted'>{_e(what)}.</p>",
           f"<p>{pills}</p>"]
    sizes = nt["set_size"]
    labels, counts = _set_size_hist(sizes)
    out.append(_histogram_svg(labels, counts, title=f"size of the {info.set_label}"))
    if info.kind == "explanation":
        mf = nt["mode_frequency"]
        edges = np.linspace(0, 1, 11)
        idx = np.clip(np.digitize(np.nan_to_num(mf), edges[1:-1]), 0, 9)
        counts = np.bincount(idx, minlength=10).tolist()
        labels = [f"{edges[i]:.1f}" for i in range(10)]
        out.append(_histogram_svg(labels, counts, title="mode frequency (bin start)",
                                  color="#7b3fc4"))
    out.append("</div>")
    return "".join(out)


def _comparison(layer: LayerResults) -> str:
    if len(layer.methods) < 2:
        return ""
    head = ("<tr><th>method</th><th>metric</th><th>replicates</th><th>level</th>"
            "<th>certified</th><th>stable</th><th>median set size</th>"
            "<th>median mode frequency</th></tr>")
    rows = []
    labels = {}
    for m in layer.methods:
        nt = layer.neuron_rows(m.name)
        labels[m.name] = np.where(nt["concept_index"] >= 0, nt["label"], NONE_NAME)
        vc = layer.verdict_counts(m.name)
        mf = nt["mode_frequency"]
        rows.append(
            f"<tr><td>{_e(m.name)}</td><td>{_e(m.metric)}</td><td class='n'>{m.n_boot}</td>"
            f"<td class='n'>{m.level:g}</td><td class='n'>{m.n_certified}</td>"
            f"<td class='n'>{vc['stable']}</td><td class='n'>{np.median(nt['set_size']):g}</td>"
            f"<td class='n'>{_fmt(np.nanmedian(mf)) if np.isfinite(mf).any() else '–'}</td></tr>")
    names = layer.method_names
    agree = ["<tr><th>same label</th>" + "".join(f"<th>{_e(b)}</th>" for b in names) + "</tr>"]
    for a in names:
        cells = "".join(
            f"<td class='n'>{np.mean(labels[a] == labels[b]):.0%}</td>" for b in names)
        agree.append(f"<tr><td>{_e(a)}</td>{cells}</tr>")
    return ("<div class='panel'><h3>Methods compared</h3>"
            f"<table class='cmp'>{head}{''.join(rows)}</table>"
            "<p class='small muted'>Share of neurons whose labels agree:</p>"
            f"<table class='cmp'>{''.join(agree)}</table></div>")


def _controls(layer: LayerResults) -> str:
    method = ""
    if len(layer.methods) > 1:
        opts = "".join(f'<option value="{i}">{_e(m.name)}</option>'
                       for i, m in enumerate(layer.methods))
        method = f'<label>method <select id="nc-method">{opts}</select></label>'
    verdicts = '<option value="">all verdicts</option>' + "".join(
        f'<option value="{v}">{_e(_VERDICT_TEXT[v])}</option>' for v in VERDICTS)
    cols = [("neuron", "neuron"), ("label", "label"), ("similarity", "similarity [lower, upper]"),
            ("lower", "lower limit"), ("null", "null"), ("set", "set size"),
            ("mf", "mode freq."), ("verdict", "verdict")]
    head = "".join(f'<button type="button" data-key="{k}" aria-sort="none">{_e(t)}</button>'
                   for k, t in cols)
    return ('<div class="controls"><div class="bar">'
            '<input type="search" id="nc-filter" placeholder="filter by neuron or label" '
            'aria-label="filter by neuron or label">'
            f'<select id="nc-verdict" aria-label="verdict">{verdicts}</select>{method}'
            f'<span id="nc-count" class="muted"></span></div>'
            f'<div class="thead grid" role="row">{head}</div></div>')


def render_report(layer: LayerResults, *, exemplars: Callable[[int], Sequence[Any]] | None = None,
                  title: str | None = None, max_concepts: int = 12, thumbnail: int = 64,
                  quality: int = 70) -> str:
    """The HTML report of a :class:`LayerResults` as one self-contained string.

    Parameters
    ----------
    layer : LayerResults
    exemplars : callable, optional
        ``exemplars(neuron_index) -> [ImageExemplar | TextExemplar, ...]`` (see
        :class:`ImageExemplars`, :class:`TextExemplars`); indices are positions in
        the original layer (``LayerResults.neurons["neuron_index"]``).
    title : str, optional
    max_concepts : int
        Concept rows drawn per card (the label, then the most probable, then the
        most similar); the rest are counted ("N more concepts in the table").
    thumbnail : int
        Longest side of the embedded image thumbnails, in pixels.
    quality : int
        JPEG quality of the thumbnails (with Pillow; PNG otherwise).

    Returns
    -------
    str
    """
    if not isinstance(layer, LayerResults):
        raise ValidationError(f"`layer` must be a LayerResults; got {type(layer).__name__}")
    for name, v, low in (("max_concepts", max_concepts, 1), ("thumbnail", thumbnail, 8),
                         ("quality", quality, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValidationError(f"`{name}` must be an integer >= {low}; got {v!r}")
    from .. import __version__

    names = sorted({str(x) for x in layer.pairs["concept"]} - {NONE_NAME}
                   | {str(x) for x, ci in zip(layer.neurons["label"],
                                                 layer.neurons["concept_index"]) if ci >= 0})
    concept_ids = {name: i for i, name in enumerate(names)}
    data: dict[str, Any] = {
        "verdicts": list(VERDICTS),
        "neurons": list(layer.neuron_names),
        "concepts": names,
        "methods": [_method_data(layer, m, concept_ids, int(max_concepts))
                    for m in layer.methods],
        "ex": None, "img": {},
    }
    if exemplars is not None:
        index = _layer_indices(layer)
        data["ex"], data["img"] = _exemplar_data(exemplars, layer, index, size=int(thumbnail),
                                                 quality=int(quality))
    title = title or f"neurocert report: {layer.n_neurons} neurons"
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    panels = "".join(_method_panel(layer, m) for m in layer.methods) + _comparison(layer)
    provenance = json.dumps({"top_k": layer.top_k, **layer.parameters}, indent=1,
                            default=str, allow_nan=True)
    return "".join([
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        ("<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"),
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        (f"<header class='top'><h1>{_e(title)}</h1><p class='muted small'>"
        f"{layer.n_neurons} neurons, methods: {_e(', '.join(layer.method_names))}. "
        f"neurocert {_e(__version__)}, {created}. Verdicts: <b>stable</b> = certified with one "
        "concept in the prediction set; <b>unstable</b> = certified but several concepts "
        "compete; <b>not certified</b> = the label's lower confidence limit does not clear the "
        "level at this sample size.</p></header><main>"),
        f"<h2>Layer summary</h2><section class='summary'>{panels}</section>",
        f"<h2>Neurons</h2>{_controls(layer)}<div id='nc-cards'></div>",
        ("</main><footer><details><summary>Provenance (parameters of every method)</summary>"
        f"<pre>{_e(provenance)}</pre></details></footer>"),
        f"<script type='application/json' id='nc-data'>{_script_json(data)}</script>",
        f"<script>{JS}</script></body></html>\n",
    ])


def _layer_indices(layer: LayerResults) -> list[int]:
    first = layer.methods[0].name
    nt = layer.neuron_rows(first)
    pos = {name: int(ix) for name, ix in zip(nt["neuron"], nt["neuron_index"])}
    return [pos[name] for name in layer.neuron_names]


def write_report(layer: LayerResults, path: str | Path, **kwargs: Any) -> Path:
    """Write the HTML report atomically (a crash never leaves a half-written file).

    Parameters
    ----------
    layer : LayerResults
    path : str or Path
        Destination ``.html`` file; missing folders are created.
    **kwargs
        Passed to :func:`render_report`.

    Returns
    -------
    pathlib.Path
    """
    from ..results import atomic_write_bytes

    text = render_report(layer, **kwargs)
    return atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- #
# Notebook views
# --------------------------------------------------------------------------- #

_NB_CSS = ("<style>.nc-nb table{border-collapse:collapse;font-size:12px}"
           ".nc-nb th,.nc-nb td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}"
           ".nc-nb .v{color:#fff;border-radius:8px;padding:0 6px}"
           ".nc-nb .v-stable{background:#1c7c43}.nc-nb .v-unstable{background:#b86e00}"
           ".nc-nb .v-not_certified{background:#b3261e}.nc-nb .v-none{background:#6b7280}</style>")


def layer_html(layer: LayerResults, rows: int = 20) -> str:
    """Notebook view of a :class:`LayerResults`: the summary and the first neurons."""
    parts = [_NB_CSS, "<div class='nc-nb'>", (f"<p><b>LayerResults</b>: {layer.n_neurons} "
             f"neurons, {len(layer.methods)} method(s), {len(layer.pairs['method'])} rows in "
             "the tidy table (<code>to_frame()</code>)</p>")]
    for m in layer.methods:
        nt = layer.neuron_rows(m.name)
        parts.append(f"<p><b>{_e(m.name)}</b>: {_e(m.statement())}</p>")
        body = []
        for j in range(min(rows, len(nt["neuron"]))):
            v = str(nt["verdict"][j])
            body.append(
                f"<tr><td>{_e(nt['neuron'][j])}</td><td>{_e(nt['label'][j] or NONE_NAME)}</td>"
                f"<td>{_fmt(nt['similarity'][j])} [{_fmt(nt['lower'][j])}, "
                f"{_fmt(nt['upper'][j])}]</td><td>{_fmt(nt['null'][j])}</td>"
                f"<td>{nt['set_size'][j]}</td><td><span class='v v-{_e(v)}'>"
                f"{_e(_VERDICT_TEXT.get(v, v))}</span> {_e(nt['verdict_text'][j])}</td></tr>")
        more = len(nt["neuron"]) - rows
        parts.append("<table><tr><th>neuron</th><th>label</th><th>similarity [lower, upper]"
                     "</th><th>null</th><th>set size</th><th>verdict</th></tr>"
                     + "".join(body) + "</table>"
                     + (f"<p>... {more} more neurons</p>" if more > 0 else ""))
    parts.append("</div>")
    return "".join(parts)


def explanation_html(result: Any, rows: int = 20) -> str:
    """Notebook view of an :class:`~neurocert.ExplanationResult`."""
    ident = result.identification
    n = len(result.set_size)
    pct = f"{100 * (1 - result.alpha):.4g}%"
    body = []
    for j in range(min(rows, n)):
        members = ", ".join(
            f"{_e(NONE_NAME if i < 0 else ident.concept_names[i])} "
            f"({result._prob(j, int(i)):.2f})" for i in result.prediction_sets[j][:5])
        if len(result.prediction_sets[j]) > 5:
            members += f", +{len(result.prediction_sets[j]) - 5}"
        cert = ", ".join(_e(ident.concept_names[i]) for i in result.certified_sets[j][:5])
        if len(result.certified_sets[j]) > 5:
            cert += f", +{len(result.certified_sets[j]) - 5}"
        body.append(
            f"<tr><td>{_e(ident.neuron_names[j])}</td><td>{_e(ident.labels[j] or NONE_NAME)}</td>"
            f"<td>{_fmt(ident.best_similarity[j])} [{_fmt(ident.best_lower[j])}, "
            f"{_fmt(ident.best_upper[j])}]</td><td>{members}</td>"
            f"<td>{_fmt(result.mode_frequency[j], 2)}</td><td>{cert}</td></tr>")
    more = f"<p>... {n - rows} more neurons</p>" if n > rows else ""
    return (_NB_CSS + "<div class='nc-nb'>"
            f"<p><b>ExplanationResult</b>: metric {_e(ident.metric)}, {n} neurons, "
            f"{result.n_boot} replicates, {pct} prediction sets (mode {_e(result.mode)}), "
            f"median set size {np.median(result.set_size):g}; coverage target: "
            f"{_e(result.coverage_target)}</p>"
            f"<table><tr><th>neuron</th><th>label</th><th>similarity [lower, upper]</th>"
            f"<th>{pct} set (probability)</th><th>mode freq</th><th>certified set "
            f"(\u03b4={ident.delta:g})</th></tr>{''.join(body)}</table>{more}</div>")
