// SafeView review UI: the queue, one item at a time, obfuscated by default; the original only on
// an explicit, reasoned (and audit-logged) reveal; decisions by button or keyboard, no page reloads.
// Protected regions are listed with the share kept; a reviewer drags (or types) a box to protect
// one more and re-runs the obfuscation, and the item is shown again once the re-run is done.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem("safeview-key"), items: [], total: 0, index: -1, scan: null, view: "default", cf: 0, objectUrl: null, drag: null };
const VIEWS = [["v-default", "default"], ["v-heat", "heat"], ["v-regions", "regions"], ["v-evidence", "evidence"]];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function api(path, options = {}) {
  const headers = Object.assign({ "X-API-Key": state.key }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

function say(text) { $("status").textContent = text; }

async function signIn(key) {
  state.key = key;
  const me = await (await api("/v1/me")).json();
  if (me.role === "submitter") throw new Error("a submitter key cannot review; use a reviewer or admin key");
  sessionStorage.setItem("safeview-key", key);
  $("who").textContent = `${me.key}… (${me.role})`;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  await loadQueue();
}

function signOut() {
  sessionStorage.removeItem("safeview-key");
  location.reload();
}

function filters(offset) {
  const params = new URLSearchParams({ limit: "20", offset: String(offset) });
  if ($("f-verdict").value) params.set("verdict", $("f-verdict").value);
  if ($("f-category").value) params.set("category", $("f-category").value);
  if ($("f-decided").value) params.set("decided", $("f-decided").value);
  return params;
}

async function loadQueue(append = false) {
  const page = await (await api("/v1/queue?" + filters(append ? state.items.length : 0))).json();
  state.items = append ? state.items.concat(page.items) : page.items;
  state.total = page.total;
  renderQueue();
  if (!append) await show(state.items.length ? 0 : -1);
}

function renderQueue() {
  $("total").textContent = state.total;
  const list = $("queue");
  list.replaceChildren(...state.items.map((item, i) => {
    const li = document.createElement("li");
    li.dataset.id = item.id;
    li.className = i === state.index ? "current" : "";
    const name = document.createElement("span");
    name.textContent = item.flagged.length ? item.flagged.join(", ") : "no category flagged";
    const verdict = document.createElement("span");
    verdict.className = "badge " + item.verdict;
    verdict.textContent = item.decision || item.verdict;
    li.append(name, verdict);
    li.addEventListener("click", () => show(i));
    return li;
  }));
  $("more").hidden = state.items.length >= state.total;
}

function setImage(blob, caption) {
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(blob);
  $("image").src = state.objectUrl;
  $("caption").textContent = caption;
}

async function setView(view) {
  const scan = state.scan;
  if (!scan) return;
  const cfs = (scan.result && scan.result.counterfactuals) || [];
  if ((view === "heat" || view === "regions") && !cfs.length) { say("Nothing was flagged, so there is no heat map or region set."); return; }
  if (view === "evidence" && !hasEvidence(scan.result)) { say("No protected regions or detected attributes to outline."); return; }
  if ((view === "heat" || view === "regions") && view === state.view) state.cf = (state.cf + 1) % cfs.length;  // again: next category
  state.view = view;
  for (const [id, name] of VIEWS) $(id).classList.toggle("on", name === view);
  let path, caption;
  const cf = state.cf;
  if (view === "heat") { path = `heatmap-${cf}`; caption = `Attribution heat map (${cfs[cf].category}) over the blurred image`; }
  else if (view === "regions") { path = `regions-${cf}`; caption = `Obfuscated regions (${cfs[cf].category}) over the blurred image`; }
  else if (view === "evidence") { path = "evidence"; caption = "Evidence: protected regions (green) and detected attributes (orange) over the blurred image"; }
  else if (scan.result && scan.result.mask) { path = "obfuscated"; caption = "Obfuscated: only the regions that made it unsafe are hidden"; }
  else { path = "blurred"; caption = "Blurred thumbnail (nothing flagged)"; }
  const blob = await (await api(`/v1/scans/${scan.id}/views/${path}`)).blob();
  if (state.scan === scan) setImage(blob, caption);
}

async function reveal() {
  const reason = $("reveal-reason").value.trim();
  if (reason.length < 3) { $("reveal-reason").focus(); say("Give a reason (3+ characters) before revealing the original."); return; }
  const scan = state.scan;
  const blob = await (await api(`/v1/scans/${scan.id}/original?` + new URLSearchParams({ reason }))).blob();
  if (state.scan !== scan) return;
  setImage(blob, "ORIGINAL revealed — this view was logged");
  state.view = "original";
  for (const [id] of VIEWS) $(id).classList.remove("on");
  say("Original revealed; the reveal is in the audit log.");
}

function percent(p) { return (100 * p).toFixed(1) + "%"; }

async function show(index) {
  state.index = index;
  renderQueue();
  $("empty").hidden = index >= 0;
  $("detail").hidden = index < 0;
  state.scan = null;
  if (index < 0) return;
  const scan = await (await api(`/v1/scans/${state.items[index].id}`)).json();
  state.scan = scan;
  state.cf = 0;
  state.view = "default";
  const result = scan.result || { categories: [], counterfactuals: [] };
  $("verdict").textContent = scan.verdict || scan.status;
  $("verdict").className = "badge " + (scan.verdict || "");
  $("scan-id").textContent = scan.id;
  $("categories").replaceChildren(...result.categories.map((c) => {
    const tr = document.createElement("tr");
    for (const text of [c.category, percent(c.unsafe_probability), c.unsafe ? "unsafe" : "safe"]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
  $("obfuscation").textContent = result.mask
    ? `Obfuscated ${percent(result.obfuscated_fraction)} of the image; output ${result.obfuscated_safe ? "verified safe" : "NOT VERIFIED" + (result.fallback === "full" ? " (whole image obfuscated)" : "")}.`
    : "";
  $("rationale").textContent = (result.rationale && result.rationale.text) || "—";
  $("attributes").replaceChildren(...attributeLines(result).map((text) => {
    const li = document.createElement("li");
    li.textContent = text;  // text only: what a detector read is never markup
    return li;
  }));
  renderProtected(scan, result);
  $("note").value = scan.decision_note || "";
  $("reveal-reason").value = "";
  say(scan.decision ? `Decided: ${scan.decision}` : "");
  await setView("default");
}

// What the attribute detectors saw on the original, what they could not check, and their second
// opinion on the output, as lines of plain text.
function attributeLines(result) {
  const report = result.attributes;
  if (!report) return ["no attribute detector ran"];
  const lines = report.attributes.map((a) =>
    `${a.name}${a.text ? ` "${a.text}"` : ""} (${a.detector} ${a.score.toFixed(2)})${a.unsafe ? " — unsafe" : ""}`);
  if (!lines.length) lines.push("the detectors that ran saw nothing");
  for (const d of report.detectors) if (d.status !== "ran") lines.push(`${d.name}: ${d.status}`);
  if (report.unchecked.length) lines.push(`not checked: ${report.unchecked.join(", ")}`);
  const opinion = result.verification && result.verification.second_opinion;
  if (opinion) {
    const copies = (opinion.copies || []).length ? ` and its copies (${opinion.copies.join(", ")})` : "";
    lines.push(`second opinion on the output${copies}: ${opinion.passed ? "passed" : "FAILED"}${opinion.complete ? "" : " (not every detector ran)"}`);
  }
  return lines;
}

function hasEvidence(result) {
  return Boolean(result && ((result.protected || []).length || (result.attributes && result.attributes.attributes.length)));
}

// The protected regions of the result (label, who marked it, share kept bit-identical) and the
// form that adds one (done, unsafe scans only: nothing is obfuscated in a safe one).
function renderProtected(scan, result) {
  const regions = result.protected || [];
  const lines = regions.map((r) =>
    `${r.label} — ${r.source}${r.detector ? ` (${r.detector})` : ""} — kept ${percent(r.kept)} — box [${r.box.join(", ")}]`);
  if (!lines.length) lines.push(scan.verdict === "unsafe" ? "none" : "none (regions are only computed for flagged images)");
  $("protected").replaceChildren(...lines.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;  // a label is the submitter's text, never markup
    return li;
  }));
  $("protect-form").hidden = !(scan.status === "done" && scan.verdict === "unsafe");
  for (const id of ["p-x0", "p-y0", "p-x1", "p-y1", "p-label", "p-reason"]) $(id).value = "";
  $("draw-box").hidden = true;
}

// Image size in pixels of the original as decoded (every view covers the whole image).
function imageSize() {
  const input = state.scan && state.scan.result && state.scan.result.input;
  return input ? [input.width, input.height] : [state.scan.width, state.scan.height];
}

function pointerPixel(event) {
  const rect = $("image").getBoundingClientRect();
  const [w, h] = imageSize();
  const fx = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
  const fy = Math.min(1, Math.max(0, (event.clientY - rect.top) / rect.height));
  return [Math.round(fx * w), Math.round(fy * h)];
}

function drawBox() {
  const [w, h] = imageSize();
  const v = ["p-x0", "p-y0", "p-x1", "p-y1"].map((id) => Number($(id).value));
  const box = $("draw-box");
  if (["p-x0", "p-y0", "p-x1", "p-y1"].some((id) => $(id).value === "") || !(v[2] > v[0] && v[3] > v[1])) { box.hidden = true; return; }
  box.hidden = false;
  box.style.left = `${(100 * v[0]) / w}%`;
  box.style.top = `${(100 * v[1]) / h}%`;
  box.style.width = `${(100 * (v[2] - v[0])) / w}%`;
  box.style.height = `${(100 * (v[3] - v[1])) / h}%`;
}

function dragTo(event) {
  if (!state.drag) return;
  const [x, y] = pointerPixel(event);
  const [sx, sy] = state.drag;
  $("p-x0").value = Math.min(sx, x);
  $("p-y0").value = Math.min(sy, y);
  $("p-x1").value = Math.max(sx, x);
  $("p-y1").value = Math.max(sy, y);
  drawBox();
}

async function protectRegion() {
  const scan = state.scan;
  if (!scan) return;
  const box = ["p-x0", "p-y0", "p-x1", "p-y1"].map((id) => Number($(id).value));
  const reason = $("p-reason").value.trim();
  if (reason.length < 3) { $("p-reason").focus(); say("Give a reason (3+ characters) for protecting the region."); return; }
  const queued = await (await api(`/v1/scans/${scan.id}/protect`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ region: { box, label: $("p-label").value.trim() || "protected" }, reason, version: scan.result_version }),
  })).json();
  $("protect-form").hidden = true;
  say(`Region added; re-running the obfuscation (result version ${queued.result_version})…`);
  for (let i = 0; i < 300; i += 1) {
    await sleep(1000);
    if (!state.scan || state.scan.id !== scan.id) return;  // the reviewer moved on
    const now = await (await api(`/v1/scans/${scan.id}`)).json();
    if (now.status === "done" || now.status === "failed") {
      if (!state.scan || state.scan.id !== scan.id) return;
      await show(state.index);
      say(now.status === "done" ? `Re-run done (result version ${now.result_version}).` : `Re-run failed: ${now.error}`);
      return;
    }
  }
  say("The re-run is still queued; it shows here once done.");
}

async function decide(action) {
  const scan = state.scan;
  if (!scan) return;
  const decided = await (await api(`/v1/scans/${scan.id}/decision`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ action, note: $("note").value, version: scan.decision_version }),
  })).json();
  scan.decision_version = decided.decision_version;
  say(`${action} recorded`);
  if ($("f-decided").value === "false") {
    state.items.splice(state.index, 1);
    state.total -= 1;
    if (state.items.length < 5 && state.total > state.items.length) await loadQueue(true);
    await show(Math.min(state.index, state.items.length - 1));
  } else {
    state.items[state.index].decision = action;
    await next();
  }
}

async function next() {
  if (state.index + 1 < state.items.length) await show(state.index + 1);
  else if (state.items.length < state.total) { await loadQueue(true); await show(state.index + 1); }
  else say("End of the queue.");
}

function guard(fn) {
  return (...args) => Promise.resolve(fn(...args)).catch((error) => {
    if (error.status === 401) { signOut(); return; }
    say("Error: " + error.message);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("key").value.trim()).catch((error) => { state.key = null; $("signin-error").textContent = error.message; });
  });
  $("signout").addEventListener("click", signOut);
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); guard(loadQueue)(); });
  $("more").addEventListener("click", guard(() => loadQueue(true)));
  $("v-default").addEventListener("click", guard(() => setView("default")));
  $("v-heat").addEventListener("click", guard(() => setView("heat")));
  $("v-regions").addEventListener("click", guard(() => setView("regions")));
  $("v-evidence").addEventListener("click", guard(() => setView("evidence")));
  $("protect-form").addEventListener("submit", (event) => { event.preventDefault(); guard(protectRegion)(); });
  for (const id of ["p-x0", "p-y0", "p-x1", "p-y1"]) $(id).addEventListener("input", drawBox);
  $("image").addEventListener("pointerdown", (event) => {
    if (!state.scan || $("protect-form").hidden) return;
    event.preventDefault();
    $("image").setPointerCapture(event.pointerId);
    state.drag = pointerPixel(event);
  });
  $("image").addEventListener("pointermove", dragTo);
  $("image").addEventListener("pointerup", (event) => { dragTo(event); state.drag = null; if (!$("p-label").value) $("p-label").focus(); });
  $("reveal-form").addEventListener("submit", (event) => { event.preventDefault(); guard(reveal)(); });
  $("approve").addEventListener("click", guard(() => decide("approve")));
  $("remove").addEventListener("click", guard(() => decide("remove")));
  $("escalate").addEventListener("click", guard(() => decide("escalate")));
  $("next").addEventListener("click", guard(next));
  document.addEventListener("keydown", (event) => {
    if ($("app").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
    if (["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName)) return;
    const actions = {
      a: () => decide("approve"), x: () => decide("remove"), e: () => decide("escalate"), n: next, j: next,
      o: () => setView("default"), h: () => setView("heat"), g: () => setView("regions"), v: () => setView("evidence"),
      r: () => ($("reveal-reason").value.trim().length >= 3 ? reveal() : $("reveal-reason").focus()),
    };
    const action = actions[event.key.toLowerCase()];
    if (action) { event.preventDefault(); guard(action)(); }
  });
  if (state.key) signIn(state.key).catch(() => { sessionStorage.removeItem("safeview-key"); state.key = null; });
});
