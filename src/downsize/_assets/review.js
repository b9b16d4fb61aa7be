// downsize review page: one item at a time, by keyboard. Served by the gateway (no build step, no
// external request). Every text from the store is written with textContent: never parsed as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const base = location.pathname.replace(/\/+$/, "");
  const KEY = "downsize-review-key";
  const S = { key: null, task: null, item: null, busy: false, editing: false, draft: new Set(),
              done: 0, latencies: [], stamps: [], error: null };
  window.__review = S; // for tests and the curious: actions done, per-action latency (ms)

  class Quiet extends Error {}

  function takeKey() {
    const m = /(?:^|&)key=([^&]+)/.exec(location.hash.slice(1));
    if (m) {
      sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(KEY);
  }

  async function api(path, body) {
    const opts = { method: body === undefined ? "GET" : "POST", headers: {} };
    if (S.key) opts.headers.Authorization = "Bearer " + S.key;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(base + "/api" + path, opts);
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    const msg = data && data.error && data.error.message;
    if (r.status === 401) { showLogin(S.key ? (msg || "the API key was refused") : ""); throw new Quiet(); }
    if (!r.ok) throw new Error(msg || "HTTP " + r.status);
    return data;
  }

  function say(text, error) {
    $("status").textContent = text || "";
    $("status").className = error ? "error" : "";
  }

  function showLogin(message) {
    for (const id of ["card", "empty"]) $(id).hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    document.body.dataset.state = "login";
    $("key").focus();
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function figures(st) {
    $("open").textContent = st.open.toLocaleString();
    $("reviewed").textContent = st.reviewed.toLocaleString();
    // your pace over your last 20 actions of the last 5 minutes (else the server's 10-minute figure)
    const now = Date.now();
    const last = S.stamps.filter((t) => now - t < 300000).slice(-20);
    const n = last.length;
    const mine = n > 1 && last[n - 1] > last[0] ? (n - 1) * 60000 / (last[n - 1] - last[0]) : st.throughput.per_minute;
    $("rate").textContent = mine ? mine.toFixed(1) : "–";
    $("conflicts").textContent = st.conflicts ? " · " + st.conflicts + " conflict(s)" : "";
    const who = Object.entries(st.reviewers).map(([k, v]) => k + " " + v).join(", ");
    $("reviewers").textContent = who ? "answers per reviewer: " + who : "";
  }

  function recent(rows) {
    const body = $("recent").tBodies[0];
    body.replaceChildren(...rows.map((r) => {
      const tr = el("tr", null, r.undone ? "undone" : "");
      for (const c of [(r.at || "").replace("T", " "), r.reviewer_name, r.action + (r.undone ? " (undone)" : ""),
                       r.shown === null ? "" : r.shown, r.text]) tr.append(el("td", c));
      return tr;
    }));
  }

  function choiceList(it) {
    const ch = it.choices;
    const list = $("choices");
    list.replaceChildren();
    $("multi-hint").hidden = ch.mode !== "multi";
    const teacherJ = it.teacher && it.teacher.json ? it.teacher.json[ch.key] : undefined;
    const studentJ = it.student && it.student.json ? it.student.json[ch.key] : undefined;
    const has = (v, o) => Array.isArray(v) ? v.includes(o) : v === o;
    ch.options.slice(0, 10).forEach((o, i) => {
      const li = el("li", null, S.draft.has(o) ? "on" : "");
      if (has(teacherJ, o)) li.classList.add("teacher");
      if (has(studentJ, o)) li.classList.add("student");
      li.append(el("kbd", i === 9 ? "0" : String(i + 1)), document.createTextNode(o));
      list.append(li);
    });
    if (ch.options.length > 10) list.append(el("li", "+" + (ch.options.length - 10) + " more: press e", "note"));
  }

  function answerBox(id, a, extra) {
    $(id).textContent = a ? a.shown : "—";
    $(id + "-box").style.opacity = a ? "1" : ".55";
    return extra;
  }

  function render(data) {
    S.item = data.item;
    S.draft = new Set();
    closeEditor();
    figures(data.stats);
    recent(data.recent);
    $("login").hidden = true;
    const it = S.item;
    if (!it) {
      $("card").hidden = true; $("empty").hidden = false;
      document.body.dataset.state = "empty";
      return;
    }
    $("empty").hidden = true; $("card").hidden = false;
    $("card").dataset.itemId = it.id;
    $("reasons").replaceChildren(...it.reasons.map((r) => el("span", r.label + (r.detail ? " · " + r.detail : ""),
                                                               "chip " + r.reason)));
    $("text").textContent = it.text;
    $("text").scrollTop = 0;
    $("chars").textContent = it.chars.toLocaleString() + " characters · item #" + it.id;
    answerBox("student", it.student);
    $("student-conf").textContent = it.student && it.student.confidence !== null
      ? "confidence " + it.student.confidence.toFixed(3) : "";
    answerBox("teacher", it.teacher);
    const served = it.reasons.find((r) => r.served);
    $("served").textContent = served ? "served: " + served.served.shown + " (by the " + served.answered_by + ")" : "";
    if (it.choices.mode === "multi" && it.draft && Array.isArray(it.draft[it.choices.key])) {
      for (const o of it.draft[it.choices.key]) S.draft.add(o);
    }
    choiceList(it);
    const active = it.reviews.filter((r) => !r.undone && r.action !== "skip");
    $("reviews").replaceChildren(...it.reviews.filter((r) => r.action !== "skip").map((r) =>
      el("li", r.reviewer_name + ": " + r.shown + " (" + r.action + ", " + (r.at || "").replace("T", " ") + ")",
         r.undone ? "undone" : "")));
    $("conflict").hidden = !it.conflict;
    $("conflict").textContent = it.conflict
      ? "Reviewers disagree: " + active.map((r) => r.reviewer_name + " → " + r.shown).join("; ") +
        ". The newest answer is in effect." : "";
    document.body.dataset.state = "item";
  }

  async function run(path, body, label) {
    if (S.busy) return;
    S.busy = true;
    const t0 = performance.now();
    try {
      const data = await api(path, body);
      render(data);
      S.latencies.push(performance.now() - t0);
      S.stamps.push(Date.now());
      S.done += 1;
      const res = data.result;
      const conflict = res && res.conflict && res.conflict.length
        ? " Conflict: " + res.conflict.map((c) => c.reviewer_name + " said " + c.shown).join(", ") + "." : "";
      say(label ? label(data) + conflict : "", false);
    } catch (e) {
      if (!(e instanceof Quiet)) say(e.message, true);
      S.error = e.message;
    } finally {
      S.busy = false;
    }
  }

  const itemPath = () => "/" + encodeURIComponent(S.task) + "/items/" + S.item.id;
  const act = (body) => run(itemPath(), body, (d) =>
    body.how === "skip" ? "Skipped." : "Saved " + JSON.stringify(d.result.shown) + " as a human label.");

  function pick(i) {
    const ch = S.item.choices;
    if (i >= ch.options.length || ch.mode === "none") return;
    const o = ch.options[i];
    if (ch.mode === "single") return act({ how: "pick", answer: { [ch.key]: o } });
    if (S.draft.has(o)) S.draft.delete(o); else S.draft.add(o);
    choiceList(S.item);
  }

  function openEditor() {
    const it = S.item;
    let draft = it.draft;
    if (it.choices.mode === "multi") draft = { [it.choices.key]: [...S.draft] };
    $("edit").value = draft === null ? "" : JSON.stringify(draft, null, 2);
    $("edit-error").textContent = "";
    $("editor").hidden = false;
    S.editing = true;
    $("edit").focus();
  }

  function closeEditor() {
    $("editor").hidden = true;
    S.editing = false;
    if (document.activeElement === $("edit")) $("edit").blur();
  }

  async function saveEdit() {
    if (S.busy) return;
    S.busy = true;
    const t0 = performance.now();
    try {
      const data = await api(itemPath(), { how: "edit", answer_text: $("edit").value });
      S.busy = false;
      render(data);
      S.latencies.push(performance.now() - t0);
      S.stamps.push(Date.now());
      S.done += 1;
      say("Saved " + JSON.stringify(data.result.shown) + " as a human label.", false);
    } catch (e) {
      if (!(e instanceof Quiet)) $("edit-error").textContent = e.message;
      S.error = e.message;
    } finally {
      S.busy = false;
    }
  }

  function undo() {
    return run("/" + encodeURIComponent(S.task) + "/undo", {}, (d) =>
      d.undone === null ? "Nothing to undo." : "Undone: item #" + d.undone + " is back.");
  }

  document.addEventListener("keydown", (e) => {
    if (S.editing) {
      if (e.key === "Escape") { e.preventDefault(); closeEditor(); }
      else if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); saveEdit(); }
      return;
    }
    const tag = e.target && e.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || e.ctrlKey || e.metaKey || e.altKey) return;
    if (!S.task || S.busy) return;
    const k = e.key;
    if (k === "u") undo();
    else if (!S.item) return;
    else if (/^[0-9]$/.test(k)) pick(k === "0" ? 9 : Number(k) - 1);
    else if (k === "a") act({ how: "teacher" });
    else if (k === "s") act({ how: "student" });
    else if (k === "k") act({ how: "skip" });
    else if (k === "e") openEditor();
    else if (k === "Enter" && S.item.choices.mode === "multi") {
      act({ how: "pick", answer: { [S.item.choices.key]: [...S.draft] } });
    } else return;
    e.preventDefault();
  });

  async function start() {
    const data = await api("/tasks");
    $("who").textContent = "reviewing as " + data.reviewer_name;
    const sel = $("task");
    sel.replaceChildren(...data.tasks.map((t) => {
      const o = el("option", t.task + (t.in_config ? "" : " (not in the config: " + t.open + " open items kept)"));
      o.value = t.task;
      o.disabled = !t.in_config;
      return o;
    }));
    const wanted = new URLSearchParams(location.search).get("task");
    const usable = data.tasks.filter((t) => t.in_config).map((t) => t.task);
    S.task = usable.includes(wanted) ? wanted : usable[0] || null;
    if (!S.task) { say("No task is configured.", true); return; }
    sel.value = S.task;
    await run("/" + encodeURIComponent(S.task) + "/next", undefined);
  }

  $("task").addEventListener("change", (e) => {
    S.task = e.target.value;
    S.stamps = [];
    const q = new URLSearchParams(location.search);
    q.set("task", S.task);
    history.replaceState(null, "", location.pathname + "?" + q.toString());
    e.target.blur();
    run("/" + encodeURIComponent(S.task) + "/next", undefined);
  });

  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    S.key = $("key").value.trim();
    sessionStorage.setItem(KEY, S.key);
    $("key").value = "";
    $("key").blur();
    start().catch((err) => { if (!(err instanceof Quiet)) say(err.message, true); });
  });

  S.key = takeKey();
  start().catch((err) => { if (!(err instanceof Quiet)) say(err.message, true); });
})();
