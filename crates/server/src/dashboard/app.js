// buildstate dashboard: builds, a build's ladder and timeline, reports with SVG charts.
// Plain JavaScript, no build step. The token lives in sessionStorage (or localStorage when the
// person asks to be remembered) and goes out only as an Authorization header, never in a URL.
"use strict";

const STORE_KEY = "buildstate.token";
const STATUSES = ["running", "in_progress", "failed", "blocked", "completed", "cancelled"];
const CODES = Array.from({ length: 21 }, (_, i) => i * 5);
const SVG = "http://www.w3.org/2000/svg";

let token = sessionStorage.getItem(STORE_KEY) || localStorage.getItem(STORE_KEY);
let follower = null; // AbortController of the live stream the current page follows

// ----- small helpers ------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const ago = (Date.now() - date.getTime()) / 1000;
  const rel = ago < 60 ? `${Math.max(0, Math.round(ago))} s ago`
    : ago < 3600 ? `${Math.round(ago / 60)} min ago`
    : ago < 86400 ? `${Math.round(ago / 3600)} h ago`
    : `${Math.round(ago / 86400)} d ago`;
  return rel;
}

function secs(value) {
  if (value === undefined || value === null) return "–";
  if (value < 60) return `${value.toFixed(value < 10 ? 1 : 0)} s`;
  if (value < 3600) return `${(value / 60).toFixed(1)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

function badge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status }, status.replace("_", " "));
}

class Unauthorized extends Error {}

async function api(path) {
  const answer = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (answer.status === 401) throw new Unauthorized();
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.error ? body.error.message : `HTTP ${answer.status}`);
  return body;
}

// Follows a server-sent event stream with fetch (EventSource cannot send the token header),
// reconnecting with Last-Event-ID after a drop.
async function follow(path, onEvent, signal) {
  let lastId = null;
  while (!signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${token}`, Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const answer = await fetch(path, { headers, signal });
      if (answer.status === 401) { signOut(); return; }
      if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
      setLive(true);
      const reader = answer.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let id = null, data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trimStart();
          }
          if (id) lastId = id;
          if (data) onEvent(JSON.parse(data));
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

let liveOn = false;

// The live indicator, as it stands (pages redraw it).
function liveDot() {
  return h("span", { id: "live", class: liveOn ? "live on" : "live" }, liveOn ? "live" : "connecting");
}

function setLive(on) {
  liveOn = on;
  const dot = document.getElementById("live");
  if (dot) {
    dot.className = on ? "live on" : "live";
    dot.textContent = on ? "live" : "reconnecting";
  }
}

function stopFollowing() {
  if (follower) follower.abort();
  liveOn = false;
  follower = new AbortController();
  return follower.signal;
}

// ----- sign in ------------------------------------------------------------------------------

function signOut() {
  sessionStorage.removeItem(STORE_KEY);
  localStorage.removeItem(STORE_KEY);
  token = null;
  route();
}

function showLogin(message) {
  stopFollowing();
  document.getElementById("who").textContent = "";
  document.getElementById("logout").hidden = true;
  const main = document.getElementById("main");
  main.replaceChildren(document.getElementById("login-template").content.cloneNode(true));
  if (message) document.getElementById("login-error").textContent = message;
  document.getElementById("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = document.getElementById("token").value.trim();
    const remember = document.getElementById("remember").checked;
    token = candidate;
    try {
      await api("/auth/whoami");
    } catch (error) {
      token = null;
      document.getElementById("login-error").textContent =
        error instanceof Unauthorized ? "That token was not accepted (unknown, revoked or expired)." : error.message;
      return;
    }
    (remember ? localStorage : sessionStorage).setItem(STORE_KEY, candidate);
    route();
  });
}

// ----- pages --------------------------------------------------------------------------------

async function route() {
  if (!token) return showLogin();
  const hash = location.hash.replace(/^#/, "") || "/";
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", (hash.startsWith("/reports") ? "reports" : "builds") === link.dataset.nav);
  }
  document.getElementById("logout").hidden = false;
  try {
    if (!document.getElementById("who").textContent) {
      const me = await api("/auth/whoami");
      document.getElementById("who").textContent = `${me.username} (${me.scope})`;
    }
    const build = hash.match(/^\/builds\/([^/?]+)/);
    if (build) await buildPage(decodeURIComponent(build[1]));
    else if (hash.startsWith("/reports")) await reportsPage();
    else await listPage();
  } catch (error) {
    if (error instanceof Unauthorized) {
      sessionStorage.removeItem(STORE_KEY);
      localStorage.removeItem(STORE_KEY);
      token = null;
      return showLogin("The token is no longer accepted: sign in again.");
    }
    document.getElementById("main").replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
  }
}

// The list of builds, filtered, updated live.
const filters = { platform: "", image_type: "", status: "" };

async function listPage() {
  const signal = stopFollowing();
  const main = document.getElementById("main");
  const query = new URLSearchParams({ limit: "50" });
  for (const [key, value] of Object.entries(filters)) if (value) query.set(key, value);
  const [page, overview] = await Promise.all([api(`/builds?${query}`), api("/status")]);

  const input = (key, label) => h("label", {}, label,
    h("input", { name: key, value: filters[key], placeholder: "any", "data-filter": key }));
  const statusSelect = h("select", { name: "status", "data-filter": "status" },
    h("option", { value: "" }, "any"),
    STATUSES.map((status) => h("option", { value: status, selected: filters.status === status }, status.replace("_", " "))));
  const form = h("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    for (const field of form.querySelectorAll("[data-filter]")) filters[field.dataset.filter] = field.value.trim();
    listPage().catch(showError);
  } }, input("platform", "Platform"), input("image_type", "Image type"),
    h("label", {}, "Status", statusSelect), h("button", { type: "submit" }, "Filter"));

  const tiles = h("div", { class: "tiles" },
    h("div", { class: "tile" }, h("b", {}, overview.builds), " builds"),
    STATUSES.map((status) => h("div", { class: `tile ${status}` },
      h("b", { "data-count": status }, overview.by_status[status] || 0), ` ${status.replace("_", " ")}`)));

  const body = h("tbody", {}, page.builds.map(buildRow));
  const table = h("div", { class: "scroll" }, h("table", { class: "builds", "data-testid": "builds" },
    h("thead", {}, h("tr", {}, h("th", {}, "Build"), h("th", {}, "Platform"), h("th", { class: "wide" }, "Image type"),
      h("th", {}, "Stage"), h("th", {}, "Status"), h("th", { class: "wide" }, "Last message"), h("th", {}, "Updated"))),
    body));
  main.replaceChildren(
    h("div", { class: "title" }, h("h1", {}, "Builds"), liveDot()),
    tiles, form, table,
    page.builds.length ? "" : h("p", { class: "muted" }, "No builds match."));

  const matches = (build) => (!filters.platform || build.platform === filters.platform)
    && (!filters.image_type || build.image_type === filters.image_type)
    && (!filters.status || build.status === filters.status);
  follow("/events", ({ build }) => {
    const existing = body.querySelector(`tr[data-build="${CSS.escape(build.id)}"]`);
    if (existing) existing.remove();
    if (!matches(build)) return;
    const row = buildRow(build);
    row.classList.add("flash");
    body.prepend(row);
  }, signal);
}

function buildRow(build) {
  return h("tr", { "data-build": build.id, "data-status": build.status, "data-state": build.state },
    h("td", {}, h("a", { href: `#/builds/${encodeURIComponent(build.id)}` }, build.id)),
    h("td", {}, build.platform),
    h("td", { class: "wide" }, build.image_type),
    h("td", {}, h("span", { class: "code" }, build.state), " ", build.state_name),
    h("td", {}, badge(build.status), build.failures ? h("small", {}, ` ${build.failures}/${build.max_retries}`) : null),
    h("td", { class: "wide message" }, build.last_message || ""),
    h("td", { title: build.updated_at }, when(build.updated_at)));
}

// One build: its ladder of 21 stages and its timeline, updated live.
async function buildPage(id) {
  const signal = stopFollowing();
  const build = await api(`/builds/${encodeURIComponent(id)}`);
  const entries = [];
  let after = 0;
  for (;;) {
    const page = await api(`/builds/${encodeURIComponent(id)}/history?after=${after}&limit=500`);
    entries.push(...page.entries);
    if (page.next_after === null || page.next_after === undefined) break;
    after = page.next_after;
  }
  const main = document.getElementById("main");
  const header = h("div", {});
  const ladder = h("ol", { class: "ladder", "data-testid": "ladder" });
  const timeline = h("ol", { class: "timeline", "data-testid": "timeline" });
  main.replaceChildren(
    h("p", {}, h("a", { href: "#/" }, "← all builds")),
    header,
    h("h2", {}, "Stages"), ladder,
    h("h2", {}, "Timeline"), timeline);

  let current = build;
  const draw = () => {
    header.replaceChildren(
      h("div", { class: "title" }, h("h1", {}, current.id), badge(current.status),
        liveDot()),
      h("p", { class: "muted" }, `${current.platform} · ${current.image_type}`,
        current.key ? ` · key ${current.key}` : "", current.description ? ` · ${current.description}` : ""),
      h("p", {}, "At stage ", h("span", { class: "code" }, current.state), ` ${current.state_name}`,
        current.failures ? ` — ${current.failures} of ${current.max_retries} retries used` : ""));
    const stages = ladderOf(current, entries);
    ladder.replaceChildren(...CODES.map((code) => {
      const stage = stages[code];
      return h("li", { class: `stage ${stage.status}`, "data-code": code, "data-stage-status": stage.status,
        title: `${code} ${stage.status}${stage.attempts ? ` (${stage.attempts} failed attempts)` : ""}` },
        h("span", { class: "code" }, code),
        h("span", { class: "stage-status" }, stage.label));
    }));
    timeline.replaceChildren(...entries.slice().reverse().map(entryItem));
  };
  draw();
  follow(`/builds/${encodeURIComponent(id)}/events?after=${current.last_seq}`, ({ build: changed, entry }) => {
    if (entries.some((known) => known.seq === entry.seq)) return;
    entries.push(entry);
    current = changed;
    draw();
    const item = timeline.firstElementChild;
    if (item) item.classList.add("flash");
  }, signal);
}

// Each stage's standing, from the history (a reset forgets what came at or after its stage).
function ladderOf(build, entries) {
  const stages = {};
  const fresh = () => { for (const code of CODES) stages[code] = { status: "pending", attempts: 0 }; };
  fresh();
  for (const entry of entries) {
    const stage = stages[entry.state];
    switch (entry.kind) {
      case "completed": stage.status = "completed"; break;
      case "skipped": stage.status = "skipped"; break;
      case "in_progress": stage.status = "in_progress"; break;
      case "failed": stage.status = "failed"; stage.attempts += 1; break;
      case "retried": stage.attempts = 0; stage.status = "pending"; break;
      case "reset":
        for (const code of CODES) if (code >= entry.state) stages[code] = { status: "pending", attempts: 0 };
        break;
      default: break;
    }
  }
  if (build.status === "blocked") stages[build.state].status = "blocked";
  if (build.status === "cancelled" && stages[build.state].status === "pending") stages[build.state].status = "cancelled";
  for (const code of CODES) {
    const stage = stages[code];
    stage.label = stage.status === "failed" || stage.status === "blocked"
      ? `${stage.status} ×${stage.attempts}` : stage.status.replace("_", " ");
  }
  return stages;
}

function entryItem(entry) {
  const source = entry.source && /^https?:\/\//.test(entry.source)
    ? h("a", { href: entry.source, rel: "noopener noreferrer", target: "_blank" }, "CI run")
    : entry.source;
  return h("li", { class: `entry ${entry.kind}`, "data-seq": entry.seq, "data-kind": entry.kind },
    h("div", { class: "entry-head" },
      h("span", { class: "code" }, entry.state), " ", h("b", {}, entry.kind.replace("_", " ")),
      entry.attempt ? ` (attempt ${entry.attempt})` : "",
      h("span", { class: "muted", title: entry.recorded_at }, ` · ${new Date(entry.recorded_at).toLocaleString()}`),
      entry.reported_by ? h("span", { class: "muted" }, ` · ${entry.reported_by}`) : null,
      source ? h("span", {}, " · ", source) : null),
    entry.message ? h("div", { class: "message" }, entry.message) : null);
}

// ----- reports ------------------------------------------------------------------------------

let reportDays = 7;

async function reportsPage() {
  stopFollowing();
  const q = `?days=${reportDays}`;
  const [success, failures, durations, stuck, recovery] = await Promise.all([
    api(`/reports/success${q}`), api(`/reports/failures${q}`), api(`/reports/durations${q}`),
    api("/reports/stuck"), api(`/reports/recovery${q}`)]);
  const days = h("select", { "data-testid": "days", onchange: (event) => {
    reportDays = Number(event.target.value);
    reportsPage().catch(showError);
  } }, [1, 7, 30, 90, 366].map((n) => h("option", { value: n, selected: n === reportDays }, `last ${n} day${n > 1 ? "s" : ""}`)));
  const rate = (group) => ({ label: group.name, value: group.success_rate === null ? 0 : group.success_rate * 100,
    text: group.success_rate === null ? "none finished" : `${(group.success_rate * 100).toFixed(0)}% of ${group.completed + group.blocked + group.cancelled}` });
  const overall = recovery.overall.time_to_recover;
  document.getElementById("main").replaceChildren(
    h("div", { class: "title" }, h("h1", {}, "Reports"), days),
    h("div", { class: "grid" },
      chartCard("Success rate by platform", "chart-success-platform", hbars(success.by_platform.map(rate), 100)),
      chartCard("Success rate by image type", "chart-success-image", hbars(success.by_image_type.map(rate), 100)),
      chartCard("Failures by stage", "chart-failures", vbars(failures.stages.map((stage) => ({
        label: stage.state, series: [stage.failures, stage.retries], title: `${stage.state} ${stage.state_name}: ${stage.failures} failures, ${stage.retries} retries, ${stage.blocked_now} blocked now` })),
        ["failures", "retries"])),
      chartCard("Stage durations (p50, p90)", "chart-durations", vbars(durations.stages.map((stage) => ({
        label: stage.state, series: [stage.p50_secs, stage.p90_secs], title: `${stage.state} ${stage.state_name}: p50 ${secs(stage.p50_secs)}, p90 ${secs(stage.p90_secs)} over ${stage.count}` })),
        ["p50", "p90"], secs)),
      h("section", { class: "card" }, h("h2", {}, "Time to recover from a failure"),
        h("p", { class: "big" }, overall ? `p50 ${secs(overall.p50_secs)} · p90 ${secs(overall.p90_secs)}` : "no recoveries yet"),
        h("p", { class: "muted" }, `${recovery.overall.recovered} recovered, ${recovery.overall.unrecovered} not (yet)`))),
    attentionTable(`Blocked (${stuck.blocked.length})`, "blocked", stuck.blocked),
    attentionTable(`Stuck: nothing reported for over ${secs(stuck.stuck_after_secs)} (${stuck.stuck.length})`, "stuck", stuck.stuck));
}

function chartCard(title, testid, chart) {
  return h("section", { class: "card", "data-testid": testid }, h("h2", {}, title), chart);
}

function hbars(rows, max) {
  if (!rows.length) return h("p", { class: "muted" }, "No builds in this window.");
  const row = 28, labelWidth = 130, width = 420;
  const svg = s("svg", { viewBox: `0 0 ${width} ${rows.length * row + 4}`, class: "chart", role: "img" });
  rows.forEach((item, i) => {
    const y = i * row + 4;
    const w = Math.max(1, ((width - labelWidth - 90) * item.value) / max);
    svg.append(
      s("text", { x: labelWidth - 6, y: y + 16, "text-anchor": "end", class: "label" }, item.label),
      s("rect", { x: labelWidth, y, width: w, height: row - 8, class: "bar" }, s("title", {}, item.text)),
      s("text", { x: labelWidth + w + 6, y: y + 16, class: "value" }, item.text));
  });
  return svg;
}

function vbars(rows, names, format = (v) => String(v)) {
  if (!rows.length) return h("p", { class: "muted" }, "Nothing in this window.");
  const height = 180, bottom = 20, top = 14, width = 420;
  const max = Math.max(...rows.flatMap((r) => r.series), 1);
  const slot = (width - 10) / rows.length;
  const bar = Math.min(18, (slot - 4) / names.length);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  rows.forEach((item, i) => {
    const x0 = 5 + i * slot + (slot - bar * names.length) / 2;
    item.series.forEach((value, k) => {
      const hgt = ((height - bottom - top) * value) / max;
      svg.append(s("rect", { x: x0 + k * bar, y: height - bottom - hgt, width: bar - 1, height: Math.max(hgt, 0.5), class: `bar s${k}` },
        s("title", {}, `${item.title} (${names[k]} ${format(value)})`)));
    });
    svg.append(s("text", { x: 5 + i * slot + slot / 2, y: height - 5, "text-anchor": "middle", class: "label" }, item.label));
  });
  svg.append(s("text", { x: 5, y: 11, class: "value" }, `max ${format(max)}`));
  const legend = h("p", { class: "legend" }, names.map((name, k) => h("span", { class: `key s${k}` }, name)));
  return h("div", {}, svg, legend);
}

function attentionTable(title, testid, builds) {
  return h("section", { class: "card", "data-testid": testid }, h("h2", {}, title),
    builds.length ? h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Build"), h("th", {}, "Platform"), h("th", {}, "Stage"),
        h("th", {}, "Quiet for"), h("th", { class: "wide" }, "Last message"))),
      h("tbody", {}, builds.map((build) => h("tr", {},
        h("td", {}, h("a", { href: `#/builds/${encodeURIComponent(build.id)}` }, build.id)),
        h("td", {}, build.platform),
        h("td", {}, h("span", { class: "code" }, build.state), ` ${build.state_name}`),
        h("td", {}, secs(build.idle_secs)),
        h("td", { class: "wide message" }, build.last_message || "")))))) : h("p", { class: "muted" }, "None."));
}

function showError(error) {
  if (error instanceof Unauthorized) return signOut();
  document.getElementById("main").prepend(h("p", { class: "error", role: "alert" }, error.message));
}

window.addEventListener("hashchange", () => route());
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", signOut);
  route();
});
