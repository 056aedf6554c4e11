"""The report's stylesheet and script, inlined into every report (no CDN, no server)."""

CSS = r"""
:root{--fg:#1d2330;--muted:#5f6b7a;--line:#d9dee5;--bg:#f6f7f9;--card:#fff;--accent:#2f6fde;
--stable:#1c7c43;--unstable:#b86e00;--notcert:#b3261e;--none:#6b7280;--boot:#2f6fde;
--split:#7b3fc4;--cert:#1c7c43}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:var(--bg)}
header.top{padding:18px 24px 8px;background:var(--card);border-bottom:1px solid var(--line)}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 8px}h3{font-size:14px;margin:10px 0 6px}
.muted{color:var(--muted)}.small{font-size:12px}
main{padding:0 24px 40px}
section.summary{display:flex;flex-wrap:wrap;gap:16px}
.panel{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;
flex:1 1 420px;min-width:320px}
.panel p{margin:4px 0}
table.cmp{border-collapse:collapse;margin:6px 0;font-size:13px}
table.cmp th,table.cmp td{border-bottom:1px solid var(--line);padding:3px 8px;text-align:left}
table.cmp td.n{text-align:right;font-variant-numeric:tabular-nums}
.pill{display:inline-block;border-radius:10px;padding:0 8px;margin:2px 4px 2px 0;font-size:12px;
color:#fff}
.v-stable{background:var(--stable)}.v-unstable{background:var(--unstable)}
.v-not_certified{background:var(--notcert)}.v-none{background:var(--none)}
svg text{font-family:inherit}
.controls{position:sticky;top:0;z-index:3;background:var(--bg);padding:10px 0 0}
.controls .bar{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin-bottom:8px}
.controls input[type=search]{padding:5px 8px;min-width:240px;border:1px solid var(--line);
border-radius:6px}
.controls select{padding:4px 6px;border:1px solid var(--line);border-radius:6px;background:#fff}
.grid{display:grid;grid-template-columns:minmax(90px,1.1fr) minmax(110px,1.4fr) 1.5fr .8fr .8fr .7fr .7fr 1.1fr;
gap:8px;align-items:center}
.thead{background:#e9edf3;border:1px solid var(--line);border-radius:6px;padding:4px 10px}
.thead button{all:unset;cursor:pointer;font-weight:600;font-size:12px;color:var(--fg);
white-space:nowrap}
.thead button:focus-visible{outline:2px solid var(--accent)}
.thead button[aria-sort=ascending]::after{content:" \25B2"}
.thead button[aria-sort=descending]::after{content:" \25BC"}
#nc-cards{margin-top:8px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;margin:0 0 8px;
content-visibility:auto;contain-intrinsic-size:auto 260px}
.card .row{padding:8px 10px;border-bottom:1px solid var(--line);font-variant-numeric:tabular-nums}
.card .row span{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.card .c-neuron{font-weight:600}
.card .body{padding:8px 12px;min-height:200px}
.card .badge{color:#fff;border-radius:10px;padding:0 8px;font-size:12px;justify-self:start}
.card p.verdict{margin:2px 0 6px;font-weight:600}
.ex{display:flex;flex-wrap:wrap;gap:8px;margin:4px 0 8px}
.ex figure{margin:0;font-size:11px;color:var(--muted)}
.ex .thumb{position:relative;display:block;width:96px;height:96px;background:#eee;overflow:hidden;
border-radius:4px}
.ex .thumb img{position:absolute;inset:0;width:100%;height:100%;object-fit:fill}
.ex .text{max-width:100%;font:13px/1.6 ui-monospace,Menlo,Consolas,"DejaVu Sans Mono",monospace;
background:#fafafa;border:1px solid var(--line);border-radius:4px;padding:3px 6px}
.ex .text span{border-radius:2px}
.stats{font-size:12.5px;color:var(--muted);margin:4px 0}
.legend{font-size:12px;color:var(--muted)}
.legend b{display:inline-block;width:10px;height:10px;margin:0 3px 0 8px;vertical-align:-1px}
footer{padding:16px 24px;color:var(--muted);font-size:12px}
details pre{white-space:pre-wrap;font-size:11px;max-height:300px;overflow:auto}
"""

JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("nc-data").textContent);
  var VERDICTS = D.verdicts;
  var VLABEL = {stable: "stable", unstable: "unstable", not_certified: "not certified",
                none: "no concept"};
  var SVGNS = "http://www.w3.org/2000/svg";
  var state = {m: 0, key: "index", dir: 1, text: "", verdict: ""};
  var list = document.getElementById("nc-cards");
  var countEl = document.getElementById("nc-count");
  var cards = [];
  var observer = null;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function sv(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) { e.setAttribute(k, attrs[k]); } }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function fmt(x) {
    if (x === null || x === undefined) { return "\u2013"; }
    var a = Math.abs(x);
    if (x !== 0 && (a >= 1e4 || a < 1e-3)) { return x.toPrecision(3); }
    return x.toFixed(3);
  }
  function conceptName(g) { return g >= 0 ? D.concepts[g] : "(none)"; }

  // ------------------------------------------------------------------ cards
  function buildCards() {
    var frag = document.createDocumentFragment();
    for (var i = 0; i < D.neurons.length; i++) {
      var c = el("article", "card");
      c.setAttribute("data-index", String(i));
      c.id = "neuron-" + i;
      c.appendChild(el("div", "row grid"));
      c.appendChild(el("div", "body"));
      c._i = i;
      c._filled = -1;
      frag.appendChild(c);
      cards.push(c);
    }
    list.appendChild(frag);
  }

  function fillRow(c) {
    var M = D.methods[state.m], N = M.n, i = c._i, h = c.firstChild;
    h.textContent = "";
    h.appendChild(el("span", "c-neuron", D.neurons[i]));
    h.appendChild(el("span", "c-label", conceptName(N.label[i])));
    h.appendChild(el("span", "c-sim", fmt(N.sim[i]) + " [" + fmt(N.lo[i]) + ", " + fmt(N.hi[i]) + "]"));
    h.appendChild(el("span", "c-lower", fmt(N.lo[i])));
    h.appendChild(el("span", "c-null", fmt(N.nul[i])));
    h.appendChild(el("span", "c-set", String(N.ss[i])));
    h.appendChild(el("span", "c-mf", M.kind === "explanation" ? fmt(N.mf[i]) : "\u2013"));
    var v = VERDICTS[N.v[i]];
    h.appendChild(el("span", "badge v-" + v, VLABEL[v]));
    c.setAttribute("data-verdict", v);
    c._filled = -1;
  }

  function exemplars(items) {
    var box = el("div", "ex");
    for (var k = 0; k < items.length; k++) {
      var it = items[k], fig = el("figure");
      if (it.t === "i") {
        var th = el("span", "thumb"), img = el("img");
        img.alt = it.c || "";
        img.src = D.img[it.s];
        th.appendChild(img);
        if (it.m) { var mk = el("img"); mk.alt = ""; mk.src = it.m; th.appendChild(mk); }
        fig.appendChild(th);
      } else {
        var tx = el("div", "text");
        for (var q = 0; q < it.k.length; q++) {
          var s = el("span", null, it.k[q]);
          var w = it.w[q] || 0;
          if (w > 0) { s.style.background = "rgba(255,140,0," + (0.15 + 0.75 * w).toFixed(2) + ")"; }
          tx.appendChild(s);
          if (q + 1 < it.k.length) { tx.appendChild(document.createTextNode(" ")); }
        }
        fig.appendChild(tx);
      }
      fig.appendChild(el("figcaption", null, it.c || ""));
      box.appendChild(fig);
    }
    return box;
  }

  function chart(M, i) {
    var R = M.r, a = R.off[i], z = R.off[i + 1], n = z - a;
    var hasP = M.kind === "explanation";
    var W = 690, rowH = 18, top = 26, H = top + Math.max(n, 1) * rowH + 18;
    var svg = sv("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
                         "class": "chart"});
    svg.appendChild(sv("title", {}, "concepts of neuron " + D.neurons[i]));
    var xP = 180, wP = 150, xM = 370, xS = 440, wS = 240;
    var lo = M.axis[0], hi = M.axis[1];
    function xs(v) { return xS + wS * (Math.min(Math.max(v, lo), hi) - lo) / ((hi - lo) || 1); }
    if (hasP) { svg.appendChild(sv("text", {x: xP, y: 12, "font-size": 11, fill: "#5f6b7a"}, "selection probability")); }
    svg.appendChild(sv("text", {x: xM - 4, y: 12, "font-size": 11, fill: "#5f6b7a"}, "B S C"));
    svg.appendChild(sv("text", {x: xS, y: 12, "font-size": 11, fill: "#5f6b7a"},
                       "similarity [lower, upper], | null"));
    svg.appendChild(sv("line", {x1: xS, x2: xS + wS, y1: top - 6, y2: top - 6, stroke: "#c3cad4"}));
    svg.appendChild(sv("text", {x: xS, y: H - 4, "font-size": 10, fill: "#5f6b7a"}, fmt(lo)));
    svg.appendChild(sv("text", {x: xS + wS, y: H - 4, "font-size": 10, fill: "#5f6b7a",
                                "text-anchor": "end"}, fmt(hi)));
    var colors = ["#2f6fde", "#7b3fc4", "#1c7c43"];
    for (var r = 0; r < n; r++) {
      var j = a + r, y = top + r * rowH, f = R.f[j];
      var name = conceptName(R.c[j]);
      var short = name.length > 28 ? name.slice(0, 27) + "\u2026" : name;
      var t = sv("text", {x: xP - 8, y: y + 12, "font-size": 12, "text-anchor": "end",
                          "font-weight": (f & 8) ? 700 : 400, "class": "cname"}, short);
      t.appendChild(sv("title", {}, name));
      svg.appendChild(t);
      if (hasP && R.p[j] !== null) {
        svg.appendChild(sv("rect", {x: xP, y: y + 3, width: Math.max(wP * R.p[j], 0.5), height: 11,
                                    fill: (f & 1) ? "#2f6fde" : "#a9bfe8"}));
        svg.appendChild(sv("text", {x: xP + wP + 4, y: y + 12, "font-size": 10, fill: "#5f6b7a"},
                           R.p[j].toFixed(2)));
      }
      for (var b = 0; b < 3; b++) {
        var on = (f & (1 << b)) !== 0;
        svg.appendChild(sv("rect", {x: xM + b * 16, y: y + 4, width: 10, height: 10, rx: 2,
                                    fill: on ? colors[b] : "none", stroke: on ? colors[b] : "#c3cad4"}));
      }
      if (R.lo[j] !== null && R.hi[j] !== null) {
        svg.appendChild(sv("line", {x1: xs(R.lo[j]), x2: xs(R.hi[j]), y1: y + 9, y2: y + 9,
                                    stroke: "#6b7280", "stroke-width": 2}));
      }
      if (R.nu[j] !== null) {
        svg.appendChild(sv("line", {x1: xs(R.nu[j]), x2: xs(R.nu[j]), y1: y + 3, y2: y + 15,
                                    stroke: "#b3261e", "stroke-width": 1.5}));
      }
      if (R.s[j] !== null) {
        svg.appendChild(sv("circle", {cx: xs(R.s[j]), cy: y + 9, r: 3.5, fill: "#1d2330"}));
      }
    }
    if (!n) { svg.appendChild(sv("text", {x: 10, y: top + 12, "font-size": 12}, "no concept")); }
    return svg;
  }

  function fillBody(c) {
    if (c._filled === state.m) { return; }
    c._filled = state.m;
    var M = D.methods[state.m], N = M.n, i = c._i, b = c.lastChild;
    b.textContent = "";
    var v = VERDICTS[N.v[i]];
    b.appendChild(el("p", "verdict", N.vt[i]));
    var ex = D.ex ? D.ex[i] : null;
    if (ex && ex.length) { b.appendChild(exemplars(ex)); }
    b.appendChild(chart(M, i));
    var more = M.r.more[i];
    var lg = el("div", "legend");
    lg.appendChild(document.createTextNode("sets:"));
    var bounded = M.delta !== null;
    var names = [M.setName, "split set", bounded ? "certified set (\u03b4=" + M.delta + ")" : "certified set (no bound)"];
    for (var k = 0; k < 3; k++) {
      var sw = el("b"); sw.style.background = ["#2f6fde", "#7b3fc4", "#1c7c43"][k];
      lg.appendChild(sw); lg.appendChild(document.createTextNode(names[k]));
    }
    if (more > 0) { lg.appendChild(document.createTextNode(" \u00b7 " + more + " more concepts in the table")); }
    b.appendChild(lg);
    var txt = bounded ?
      M.metric + " " + fmt(N.sim[i]) + ", simultaneous " + (100 * (1 - M.delta)).toPrecision(3) +
      "% limits [" + fmt(N.lo[i]) + ", " + fmt(N.hi[i]) + "], null " + fmt(N.nul[i]) +
      ", regret \u2264 " + fmt(N.rg[i]) + "; certified set: " + N.cs[i] + " concept" + (N.cs[i] === 1 ? "" : "s") :
      M.metric + " " + fmt(N.sim[i]) + " (no finite-sample bound for this similarity: no limits, no certified set)";
    if (M.kind === "explanation") {
      txt += "; " + M.setName + ": " + N.bs[i] + (M.hasSplit ? ", split set: " + N.sp[i] : "") +
        "; mode frequency " + fmt(N.mf[i]);
    }
    b.appendChild(el("p", "stats", txt));
    if (D.methods.length > 1) {
      var parts = [];
      for (var m = 0; m < D.methods.length; m++) {
        if (m === state.m) { continue; }
        var O = D.methods[m];
        parts.push(O.name + ": " + conceptName(O.n.label[i]) + " (" + VLABEL[VERDICTS[O.n.v[i]]] + ")");
      }
      b.appendChild(el("p", "stats", "other methods \u2014 " + parts.join("; ")));
    }
    c.setAttribute("data-verdict", v);
  }

  function observeAll() {
    if (!("IntersectionObserver" in window)) { for (var i = 0; i < cards.length; i++) { fillBody(cards[i]); } return; }
    if (observer) { observer.disconnect(); }
    observer = new IntersectionObserver(function (entries) {
      for (var k = 0; k < entries.length; k++) { if (entries[k].isIntersecting) { fillBody(entries[k].target); } }
    }, {rootMargin: "600px 0px"});
    for (var i = 0; i < cards.length; i++) { observer.observe(cards[i]); }
  }

  // ---------------------------------------------------------- sort and filter
  var STRKEYS = {neuron: 1, label: 1};
  function keyOf(i) {
    var N = D.methods[state.m].n;
    switch (state.key) {
      case "neuron": return D.neurons[i];
      case "label": return conceptName(N.label[i]);
      case "similarity": return N.sim[i];
      case "lower": return N.lo[i];
      case "null": return N.nul[i];
      case "set": return N.ss[i];
      case "mf": return N.mf[i];
      case "verdict": return N.v[i];
      default: return i;
    }
  }
  function sortCards() {
    var keys = {};
    for (var i = 0; i < cards.length; i++) { keys[i] = keyOf(i); }
    var dir = state.dir, str = STRKEYS[state.key] === 1;
    var order = cards.slice().sort(function (x, y) {
      var a = keys[x._i], b = keys[y._i];
      var an = a === null || a === undefined, bn = b === null || b === undefined;
      if (an || bn) { return an === bn ? x._i - y._i : (an ? 1 : -1); }
      var d = str ? String(a).localeCompare(String(b), undefined, {numeric: true}) : (a < b ? -1 : (a > b ? 1 : 0));
      return d !== 0 ? dir * d : x._i - y._i;
    });
    var frag = document.createDocumentFragment();
    for (var k = 0; k < order.length; k++) { frag.appendChild(order[k]); }
    list.appendChild(frag);
    var btns = document.querySelectorAll(".thead button[data-key]");
    for (var q = 0; q < btns.length; q++) {
      var on = btns[q].getAttribute("data-key") === state.key;
      btns[q].setAttribute("aria-sort", on ? (state.dir > 0 ? "ascending" : "descending") : "none");
    }
  }
  function applyFilter() {
    var t = state.text.toLowerCase(), N = D.methods[state.m].n, shown = 0;
    for (var k = 0; k < cards.length; k++) {
      var c = cards[k], i = c._i, ok = true;
      if (state.verdict) { ok = VERDICTS[N.v[i]] === state.verdict; }
      if (ok && t) {
        ok = D.neurons[i].toLowerCase().indexOf(t) >= 0 ||
             conceptName(N.label[i]).toLowerCase().indexOf(t) >= 0;
      }
      c.hidden = !ok;
      if (ok) { shown++; }
    }
    countEl.textContent = shown + " of " + cards.length + " neurons";
  }
  function refreshAll() {
    for (var i = 0; i < cards.length; i++) { fillRow(cards[i]); }
    sortCards();
    applyFilter();
    observeAll();
  }

  function wire() {
    var btns = document.querySelectorAll(".thead button[data-key]");
    for (var q = 0; q < btns.length; q++) {
      btns[q].addEventListener("click", function (ev) {
        var key = ev.currentTarget.getAttribute("data-key");
        if (state.key === key) { state.dir = -state.dir; }
        else { state.key = key; state.dir = STRKEYS[key] === 1 || key === "verdict" || key === "index" ? 1 : -1; }
        sortCards();
      });
    }
    var search = document.getElementById("nc-filter");
    search.addEventListener("input", function () { state.text = search.value; applyFilter(); });
    var vsel = document.getElementById("nc-verdict");
    vsel.addEventListener("change", function () { state.verdict = vsel.value; applyFilter(); });
    var msel = document.getElementById("nc-method");
    if (msel) {
      msel.addEventListener("change", function () { state.m = Number(msel.value); refreshAll(); });
    }
  }

  buildCards();
  wire();
  refreshAll();
  document.body.setAttribute("data-ready", "1");
  window.neurocertReport = {ready: true, ms: performance.now(), cards: cards.length};
})();
"""
