// Enhancements only: the page is complete without this script (CI servers often block it).
// Filters work on buckets (goroutines with identical stacks); each bucket carries its
// per-state counts and its stack's function names, so counts stay exact without reading
// the embedded snapshot.
(function () {
  "use strict";
  var doc = document;
  var controls = doc.getElementById("controls");
  if (!controls) { return; }
  var stateSel = doc.getElementById("f-state");
  var funcIn = doc.getElementById("f-func");
  var textIn = doc.getElementById("f-text");
  var output = doc.getElementById("f-count");

  // Thousands separators by hand: Intl's first use costs more than this whole script.
  function fmt(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  function plural(n, word) { return fmt(n) + " " + word + (n === 1 ? "" : "s"); }

  var groups = [];
  var groupOf = new Map();
  doc.querySelectorAll("details.group").forEach(function (el) {
    var g = { el: el, n: el.querySelector(":scope > summary .n"), buckets: [],
              total: Number(el.querySelector(":scope > summary .n").getAttribute("data-total")),
              proc: el.closest("section.proc") };
    groups.push(g);
    groupOf.set(el, g);
  });

  var buckets = [];
  doc.querySelectorAll(".bucket").forEach(function (el) {
    var b = { el: el, total: Number(el.getAttribute("data-total")),
              states: JSON.parse(el.getAttribute("data-states") || "{}"),
              fns: (el.getAttribute("data-fns") || "").toLowerCase().split("\n"),
              n: el.matches("details") ? el.querySelector(":scope > summary .n") : null,
              text: null };
    var g = groupOf.get(el.closest("details.group"));
    if (g) { g.buckets.push(b); }
    buckets.push(b);
  });

  var procs = [];
  doc.querySelectorAll("section.proc").forEach(function (el) {
    var c = el.querySelector(".pcount");
    procs.push({ el: el, count: c, total: Number(c.getAttribute("data-total")), shown: 0 });
  });

  function bucketCount(b, state, fn, text) {
    var n = state ? (b.states[state] || 0) : b.total;
    if (n && fn && !b.fns.some(function (f) { return f.indexOf(fn) >= 0; })) { n = 0; }
    if (n && text) {
      if (b.text === null) { b.text = b.el.textContent.toLowerCase(); }
      if (b.text.indexOf(text) < 0) { n = 0; }
    }
    return n;
  }

  function label(shown, total, filtering) {
    return filtering && shown !== total ? fmt(shown) + " of " + fmt(total) : fmt(total);
  }

  function apply() {
    var state = stateSel.value;
    var fn = funcIn.value.trim().toLowerCase();
    var text = textIn.value.trim().toLowerCase();
    var filtering = Boolean(state || fn || text);
    var shown = 0, total = 0, shownGroups = 0;
    var perProc = new Map();
    groups.forEach(function (g) {
      var sum = 0;
      g.buckets.forEach(function (b) {
        var n = bucketCount(b, state, fn, text);
        b.el.classList.toggle("is-hidden", n === 0);
        if (b.n) { b.n.textContent = label(n, b.total, filtering); }
        sum += n;
      });
      g.el.classList.toggle("is-hidden", sum === 0);
      g.n.textContent = label(sum, g.total, filtering);
      shown += sum;
      total += g.total;
      if (sum) { shownGroups += 1; }
      perProc.set(g.proc, (perProc.get(g.proc) || 0) + sum);
    });
    procs.forEach(function (p) {
      p.count.textContent = label(perProc.get(p.el) || 0, p.total, filtering);
    });
    output.textContent = filtering
      ? "Showing " + fmt(shown) + " of " + plural(total, "goroutine") + " in " +
        fmt(shownGroups) + " of " + plural(groups.length, "group")
      : plural(total, "goroutine") + " in " + plural(groups.length, "group");
  }

  function setOpen(open) {
    doc.querySelectorAll("details.group, details.bucket").forEach(function (d) { d.open = open; });
  }

  controls.addEventListener("submit", function (e) { e.preventDefault(); });
  stateSel.addEventListener("change", apply);
  funcIn.addEventListener("input", apply);
  textIn.addEventListener("input", apply);
  doc.getElementById("expand-all").addEventListener("click", function () { setOpen(true); });
  doc.getElementById("collapse-all").addEventListener("click", function () { setOpen(false); });
  controls.hidden = false;
  // A reload may restore the previous filter values; otherwise the page is already right.
  if (stateSel.value || funcIn.value || textIn.value) { apply(); } else {
    output.textContent = plural(buckets.reduce(function (s, b) { return s + b.total; }, 0),
                                "goroutine") + " in " + plural(groups.length, "group");
  }

  // Sortable tables: click a header to sort by it (numbers numerically), again to reverse.
  var NUMBER = /^\s*-?\d+(\.\d+)?(e[+-]?\d+)?\s*$/i;
  function sortKey(td) {
    var text = td ? td.textContent : "";
    if (td && td.classList.contains("num") && NUMBER.test(text)) { return { num: Number(text) }; }
    return { str: text };
  }
  function compare(a, b) {
    if ("num" in a && "num" in b) { return a.num - b.num; }
    if ("num" in a) { return -1; }
    if ("num" in b) { return 1; }
    return a.str.localeCompare(b.str, undefined, { numeric: true });
  }
  // Captured variable tables: keep the rows containing the typed text (any cell, any case).
  doc.querySelectorAll("section.capture").forEach(function (sec) {
    var bar = sec.querySelector(".tfilter"), input = sec.querySelector(".rowfilter");
    var count = sec.querySelector(".rowcount"), table = sec.querySelector("table");
    if (!bar || !input || !table) { return; }
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var texts = rows.map(function (r) { return r.textContent.toLowerCase(); });
    function filter() {
      var q = input.value.trim().toLowerCase(), shown = 0;
      rows.forEach(function (r, i) {
        var keep = !q || texts[i].indexOf(q) >= 0;
        r.classList.toggle("is-hidden", !keep);
        if (keep) { shown += 1; }
      });
      count.textContent = q ? fmt(shown) + " of " + plural(rows.length, "row") : "";
    }
    input.addEventListener("input", filter);
    bar.hidden = false;
    if (input.value) { filter(); }
  });

  doc.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, col) {
      th.tabIndex = 0;
      th.title = "Sort by this column";
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).map(function (r) {
          return { r: r, k: sortKey(r.cells[col]) };
        });
        rows.sort(function (x, y) { var c = compare(x.k, y.k); return asc ? c : -c; });
        var frag = doc.createDocumentFragment();
        rows.forEach(function (x) { frag.appendChild(x.r); });
        body.appendChild(frag);
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
      });
    });
  });

  // A link to a goroutine (wait chains, link lines) opens the groups it sits in, then
  // shows it: its anchor may be inside closed <details>, or hidden by a filter.
  function reveal(id) {
    var el = id && doc.getElementById(id);
    if (!el) { return; }
    for (var d = el.parentElement; d; d = d.parentElement) {
      if (d.tagName === "DETAILS") { d.open = true; }
      if (d.hidden) { d.hidden = false; }
    }
    doc.querySelectorAll(".glink.hit").forEach(function (x) { x.classList.remove("hit"); });
    el.classList.add("hit");
    el.scrollIntoView({block: "center"});
  }
  doc.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("a.golink");
    if (!a) { return; }
    var id = a.getAttribute("href").slice(1);
    e.preventDefault();
    if (history.pushState) { history.pushState(null, "", "#" + id); }
    reveal(id);
  });
  window.addEventListener("hashchange", function () { reveal(location.hash.slice(1)); });
  if (location.hash) { reveal(location.hash.slice(1)); }
}());
