// portolan serve: the page's one script. Live updates (server-sent events, then the
// server's own HTML swapped in), the table's filter and sort, and the actions (probe,
// kill with confirmation). No inline script anywhere (the Content-Security-Policy allows
// only this file), and nothing here builds markup from data: text goes in as textContent.
"use strict";
(function () {
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";

  // --- live updates ---------------------------------------------------------------
  var live = document.querySelector("[data-live]");
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(live.getAttribute("data-live"), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null) {
          // The server escaped every string in this fragment; it carries no script.
          live.innerHTML = html;
          applyFilter();
          applySort();
        }
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  if (live && window.EventSource) {
    var es = new EventSource("/events");
    es.addEventListener("change", refresh);
  }

  // --- filter ----------------------------------------------------------------------
  var filter = document.getElementById("filter");
  var keys = { port: "data-port", proc: "data-proc", user: "data-user", unit: "data-unit",
               proto: "data-proto", state: "data-state" };
  function applyFilter() {
    if (!filter) return;
    var terms = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var rows = document.querySelectorAll("#ports tbody tr");
    rows.forEach(function (row) {
      var text = row.textContent.toLowerCase();
      var ok = terms.every(function (t) {
        var i = t.indexOf(":");
        if (i > 0 && keys[t.slice(0, i)]) {
          var v = (row.getAttribute(keys[t.slice(0, i)]) || "").toLowerCase();
          var want = t.slice(i + 1);
          return t.slice(0, i) === "port" ? v === want : v.indexOf(want) >= 0;
        }
        return text.indexOf(t) >= 0;
      });
      row.hidden = !ok;
    });
  }
  if (filter) filter.addEventListener("input", applyFilter);

  // --- sort ------------------------------------------------------------------------
  var sortCol = -1, sortDir = 1;
  function applySort() {
    var table = document.getElementById("ports");
    if (!table || sortCol < 0) return;
    var th = table.querySelectorAll("thead th")[sortCol];
    var num = th && th.getAttribute("data-sort") === "num";
    table.querySelectorAll("thead th").forEach(function (h, i) {
      h.setAttribute("aria-sort", i === sortCol ? (sortDir > 0 ? "ascending" : "descending") : "none");
    });
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[sortCol].textContent.trim(), y = b.cells[sortCol].textContent.trim();
      if (num) { return ((parseFloat(x) || 0) - (parseFloat(y) || 0)) * sortDir; }
      return x.localeCompare(y) * sortDir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.addEventListener("click", function (ev) {
    var th = ev.target.closest && ev.target.closest("#ports th[data-sort]");
    if (!th) return;
    var i = Array.prototype.indexOf.call(th.parentNode.children, th);
    sortDir = i === sortCol ? -sortDir : 1;
    sortCol = i;
    applySort();
  });

  // --- actions ---------------------------------------------------------------------
  var result = document.getElementById("action-result");
  function say(text, bad) {
    if (!result) return;
    result.textContent = text;
    result.className = bad ? "bad" : "good";
  }
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, body: j }; },
                           function () { return { ok: r.ok, body: {} }; });
    });
  }
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest && ev.target.closest("button.probe");
    if (!b) return;
    var port = parseInt(b.getAttribute("data-port"), 10), proto = b.getAttribute("data-proto");
    say("probing " + proto + "/" + port + "…");
    post("/api/probe", { port: port, proto: proto }).then(function (r) {
      if (!r.ok) { say(r.body.error || "the probe failed", true); return; }
      var parts = (r.body.sockets || []).filter(function (s) { return s.answers; }).map(function (s) {
        var a = s.answers;
        return s.local_addr + ":" + s.local_port + " — " +
          [a.service, a.product, a.version].filter(Boolean).join(" ") +
          (a.silence ? " (" + a.silence + ")" : "");
      });
      say(parts.length ? "answers: " + parts.join("; ") : "nothing answered");
    }, function () { say("the dashboard did not answer", true); });
  });

  var dialog = document.getElementById("confirm-kill");
  var pending = null;
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest && ev.target.closest("button.kill");
    if (!b || !dialog) return;
    pending = { port: parseInt(b.getAttribute("data-port"), 10), proto: b.getAttribute("data-proto"), signal: "TERM" };
    document.getElementById("confirm-kill-what").textContent = b.getAttribute("data-holders") || "?";
    dialog.showModal();
  });
  if (dialog) {
    dialog.addEventListener("close", function () {
      var go = dialog.returnValue === "yes" && pending;
      var what = pending;
      pending = null;
      if (!go) { say("nothing was signalled"); return; }
      say("signalling " + what.proto + "/" + what.port + "…");
      post("/api/kill", what).then(function (r) {
        if (!r.ok) { say(r.body.error || "kill failed", true); return; }
        var k = r.body;
        var pids = (k.pids || []).join(", ");
        if (k.freed) {
          say("port " + k.port + "/" + k.proto + " is free: SIG" + k.signal + " sent to pid " + pids);
        } else {
          say("SIG" + k.signal + " sent to pid " + pids + " but port " + k.port + "/" + k.proto +
              " is still held" + ((k.failures || []).length ? ": " + k.failures.join("; ") : ""), true);
        }
      }, function () { say("the dashboard did not answer", true); });
    });
  }
})();
