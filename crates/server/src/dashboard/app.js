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

// "in 1:05", "in 2 h 03 min", or "due now" for a time in the future (a failed build's next
// attempt). Elements made by countdown() are refreshed every second by tickCountdowns().
function untilText(iso) {
  const left = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
  if (left <= 0) return "due now";
  if (left < 3600) return `in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  return `in ${Math.floor(left / 3600)} h ${String(Math.floor((left % 3600) / 60)).padStart(2, "0")} min`;
}

function countdown(iso) {
  return h("span", { class: "countdown", "data-countdown": iso, title: new Date(iso).toLocaleString() }, untilText(iso));
}

function tickCountdowns() {
  for (const el of document.querySelectorAll("[data-countdown]")) el.textContent = untilText(el.dataset.countdown);
}
setInterval(tickCountdowns, 1000);

// The stage names this server uses (from /status), by code; filled at sign-in.
let stageNames = {};
// Who is signed in (`/auth/whoami`): operator actions are offered to admin tokens only.
let me = null;

// What a person should know about a build's retries, in a few words: the attempt it is on, or
// that it needs a person. `max_retries` 0 means one attempt and no retry.
function retryNote(build) {
  if (build.status === "blocked") {
    return `after ${build.failures} failure${build.failures === 1 ? "" : "s"}: needs a person`;
  }
  if (build.status === "failed") {
    // A build with a retry policy allows each stage its own count: the policy card shows them.
    if (build.reopened_until != null) return `retry ${build.failures} of stage ${build.reopened_until}, from ${build.state}`;
    return build.retry_policy ? `retry ${build.failures}` : `retry ${build.failures} of ${build.max_retries}`;
  }
  if (build.failures) return `${build.failures} failure${build.failures === 1 ? "" : "s"}`;
  return "";
}

function badge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status }, status.replace("_", " "));
}

class Unauthorized extends Error {}

async function api(path, body) {
  const init = { headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const answer = await fetch(path, init);
  if (answer.status === 401) throw new Unauthorized();
  const result = await answer.json();
  if (!answer.ok) throw new Error(result.error ? result.error.message : `HTTP ${answer.status}`);
  return result;
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
  me = null;
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
    if (!me) {
      const [who, overview] = await Promise.all([api("/auth/whoami"), api("/status")]);
      me = who;
      stageNames = Object.fromEntries((overview.stages || []).map((stage) => [stage.code, stage.name]));
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
      me = null;
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

  // Builds that need a person first; otherwise the server's order (newest first).
  const needsPerson = (build) => build.status === "blocked";
  const ordered = [...page.builds.filter(needsPerson), ...page.builds.filter((b) => !needsPerson(b))];
  const body = h("tbody", {}, ordered.map(buildRow));
  // Build and status first: they are what a phone shows without scrolling.
  const table = h("div", { class: "scroll" }, h("table", { class: "builds", "data-testid": "builds" },
    h("thead", {}, h("tr", {}, h("th", {}, "Build"), h("th", {}, "Status"), h("th", {}, "Stage"),
      h("th", { class: "wide" }, "Platform"), h("th", { class: "wide" }, "Image type"),
      h("th", { class: "wide" }, "Last message"), h("th", {}, "Updated"))),
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
    // Newest first, below the builds that need a person (unless it is one).
    const blockedRows = body.querySelectorAll('tr[data-status="blocked"]');
    if (needsPerson(build) || !blockedRows.length) body.prepend(row);
    else blockedRows[blockedRows.length - 1].after(row);
  }, signal);
}

// A build's name for people: its key, else its platform and image type.
function buildName(build) {
  return build.key || `${build.platform}/${build.image_type}`;
}

// The status, what it means for retries, and when the next attempt is due.
function statusCell(build) {
  const note = retryNote(build);
  return [badge(build.status),
    note ? h("small", { class: "retry-note", "data-testid": "retry-note" }, ` ${note}`) : null,
    build.status === "failed" && build.next_attempt_at
      ? h("small", { class: "next-attempt" }, " · next attempt ", countdown(build.next_attempt_at)) : null];
}

function buildRow(build) {
  return h("tr", { "data-build": build.id, "data-status": build.status, "data-state": build.state },
    h("td", { class: "name" }, h("a", { href: `#/builds/${encodeURIComponent(build.id)}` }, buildName(build)),
      h("small", { class: "muted id" }, build.id)),
    h("td", { class: "status" }, statusCell(build)),
    h("td", {}, h("span", { class: "code" }, build.state), " ", build.state_name),
    h("td", { class: "wide" }, build.platform),
    h("td", { class: "wide" }, build.image_type),
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
  const details = h("div", { class: "details" });
  const actions = h("div", {});
  const ladder = h("ol", { class: "ladder", "data-testid": "ladder" });
  const timeline = h("ol", { class: "timeline", "data-testid": "timeline" });
  main.replaceChildren(
    h("p", {}, h("a", { href: "#/" }, "← all builds")),
    header, details, actions,
    h("h2", {}, "Stages"), ladder,
    h("h2", {}, "Timeline"), timeline);

  let current = build;
  const draw = () => {
    header.replaceChildren(
      h("div", { class: "title" }, h("h1", {}, buildName(current)), badge(current.status), liveDot()),
      h("p", { class: "muted" }, `build ${current.id} · ${current.platform} · ${current.image_type}`,
        current.description ? ` · ${current.description}` : ""),
      h("p", { "data-testid": "where" }, "At stage ", h("span", { class: "code" }, current.state), ` ${current.state_name}`,
        retryNote(current) ? ` — ${retryNote(current)}` : "",
        current.status === "failed" && current.next_attempt_at
          ? h("span", { "data-testid": "next-attempt" }, " · next attempt ", countdown(current.next_attempt_at),
            ` (${new Date(current.next_attempt_at).toLocaleString()})`) : null,
        current.lease ? ` · held by ${current.lease.run} until ${new Date(current.lease.expires_at).toLocaleString()}` : ""));
    details.replaceChildren(...buildDetails(current));
    // Rebuilt only when what it offers changes, so a live event does not wipe a reason being typed.
    const offer = `${current.status}:${current.state}`;
    if (me && me.scope === "admin" && actions.dataset.offer !== offer) {
      actions.dataset.offer = offer;
      actions.replaceChildren(operatorActions(current, (changed) => { current = changed; draw(); }));
    }
    const stages = ladderOf(current, entries);
    ladder.replaceChildren(...CODES.map((code) => {
      const stage = stages[code];
      const name = code === current.state ? current.state_name : (stageNames[code] || "");
      return h("li", { class: `stage ${stage.status}`, "data-code": code, "data-stage-status": stage.status,
        title: `${code} ${name}: ${stage.status}${stage.attempts ? ` (${stage.attempts} failed attempts)` : ""}` },
        h("span", { class: "code" }, code),
        name ? h("span", { class: "stage-name" }, name) : null,
        h("span", { class: "stage-status" }, stage.label));
    }));
    timeline.replaceChildren(...timelineItems(entries.slice().reverse()));
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

// Labels and the outputs of the completed stages (what a resumed run gets back).
function buildDetails(build) {
  const parts = [];
  const labels = Object.entries(build.labels || {});
  if (labels.length) {
    parts.push(h("p", { class: "labels", "data-testid": "labels" },
      labels.map(([name, value]) => h("span", { class: "label" }, `${name}=${value}`))));
  }
  const outputs = Object.entries(build.outputs || {});
  if (outputs.length) {
    parts.push(h("section", { class: "card", "data-testid": "outputs" }, h("h2", {}, "Outputs"),
      h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Value"), h("th", {}, "Set by stage"))),
        h("tbody", {}, outputs.map(([name, output]) => h("tr", { "data-output": name },
          h("td", {}, h("code", {}, name)), h("td", { class: "message" }, output.value),
          h("td", {}, h("span", { class: "code" }, output.stage), ` ${stageNames[output.stage] || ""}`))))))));
  }
  if (build.reopened_until != null) {
    parts.push(h("p", { class: "card reopened", "data-testid": "reopened" },
      `Stages ${build.state}–${build.reopened_until} were reopened to retry stage ${build.reopened_until}: `
      + `no stage after ${build.reopened_until} runs until it completes again.`));
  }
  const rules = (build.retry_policy && build.retry_policy.rules) || [];
  if (rules.length) {
    const shown = (value) => (value == null ? "–" : String(value));
    parts.push(h("section", { class: "card", "data-testid": "retry-policy" }, h("h2", {}, "Retry policy"),
      h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, ["Stages", "Retries", "Backoff base (s)", "Backoff cap (s)", "Restart from"]
          .map((title) => h("th", {}, title)))),
        h("tbody", {}, rules.map((rule) => h("tr", { "data-stages": String(rule.stages) },
          h("td", {}, h("span", { class: "code" }, String(rule.stages))),
          h("td", {}, shown(rule.max_retries)), h("td", {}, shown(rule.backoff_base_secs)),
          h("td", {}, shown(rule.backoff_cap_secs)), h("td", {}, shown(rule.restart_from)))))))));
  }
  return parts;
}

// The operator actions an admin token may take, each with the reason the history keeps. Only
// the ones the build can take are offered; the server decides anyway.
function operatorActions(build, changed) {
  const offered = [];
  if (build.status === "blocked" || build.status === "failed") offered.push(["retry", "Retry the failed stage"]);
  if (build.status !== "cancelled") offered.push(["reset", "Reset to a stage"]);
  if (build.status !== "completed" && build.status !== "cancelled") offered.push(["cancel", "Cancel the build"]);
  if (!offered.length) return h("span");
  const action = h("select", { name: "action", "data-testid": "operator-action" },
    offered.map(([value, label]) => h("option", { value }, label)));
  const stage = h("select", { name: "state", "data-testid": "operator-state" },
    CODES.filter((code) => code <= build.state).reverse()
      .map((code) => h("option", { value: code }, `${code} ${stageNames[code] || ""}`)));
  const reason = h("input", { name: "reason", required: true, placeholder: "why (kept in the history)",
    "data-testid": "operator-reason", maxlength: 500 });
  const message = h("p", { class: "error", role: "alert", "data-testid": "operator-error" });
  const stageLabel = h("label", {}, "Stage", stage);
  const showStage = () => { stageLabel.hidden = action.value !== "reset"; };
  action.addEventListener("change", showStage);
  showStage();
  const form = h("form", { class: "card operator", "data-testid": "operator", onsubmit: async (event) => {
    event.preventDefault();
    message.textContent = "";
    const why = reason.value.trim();
    if (!why) { message.textContent = "Say why: the reason goes into the build's history."; return; }
    const body = action.value === "reset" ? { state: Number(stage.value), reason: why } : { reason: why };
    try {
      const result = await api(`/builds/${encodeURIComponent(build.id)}/${action.value}`, body);
      changed(result.build);
      reason.value = "";
    } catch (error) {
      if (error instanceof Unauthorized) return signOut();
      message.textContent = error.message;
    }
  } },
  h("h2", {}, "Operator actions"),
  h("div", { class: "filters" }, h("label", {}, "Action", action), stageLabel,
    h("label", { class: "grow" }, "Reason", reason), h("button", { type: "submit" }, "Apply")),
  message);
  return form;
}

// The timeline, newest first, with runs of skipped stages folded into one row each: a
// completion far ahead records every stage between as skipped, which says one thing once.
function timelineItems(newestFirst) {
  const items = [];
  for (let i = 0; i < newestFirst.length; i += 1) {
    let j = i;
    while (j + 1 < newestFirst.length && newestFirst[i].kind === "skipped" && newestFirst[j + 1].kind === "skipped") j += 1;
    if (j - i >= 2) {
      const run = newestFirst.slice(i, j + 1);
      const low = run[run.length - 1], high = run[0];
      items.push(h("li", { class: "entry skipped folded", "data-seq": `${low.seq}-${high.seq}`, "data-kind": "skipped",
        "data-count": run.length },
        h("div", { class: "entry-head" },
          h("span", { class: "code" }, `${low.state}–${high.state}`), " ", h("b", {}, `${run.length} stages skipped`),
          h("span", { class: "muted", title: high.recorded_at }, ` · ${new Date(high.recorded_at).toLocaleString()}`)),
        low.message ? h("div", { class: "message" }, low.message) : null));
      i = j;
    } else {
      items.push(entryItem(newestFirst[i]));
    }
  }
  return items;
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
      // A retry policy's restart_from: the stages from here run again; the failed one keeps
      // its failures (they count until it completes).
      case "reopened":
        for (const code of CODES) if (code >= entry.state && stages[code].status !== "failed") stages[code].status = "pending";
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
  // Kinds this page does not know (`retry_due` from automatic retries, anything newer) are
  // shown by their name, never dropped.
  const kind = String(entry.kind || "unknown");
  return h("li", { class: `entry ${kind.replace(/[^a-z_]/g, "")}`, "data-seq": entry.seq, "data-kind": kind },
    h("div", { class: "entry-head" },
      h("span", { class: "code" }, entry.state), stageNames[entry.state] ? h("span", { class: "muted" }, ` ${stageNames[entry.state]}`) : null,
      " ", h("b", {}, kind.replace(/_/g, " ")),
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
  const [success, failures, durations, stuck, recovery, savings] = await Promise.all([
    api(`/reports/success${q}`), api(`/reports/failures${q}`), api(`/reports/durations${q}`),
    api("/reports/stuck"), api(`/reports/recovery${q}`), api(`/reports/savings${q}`)]);
  const days = h("select", { "data-testid": "days", onchange: (event) => {
    reportDays = Number(event.target.value);
    reportsPage().catch(showError);
  } }, [1, 7, 30, 90, 366].map((n) => h("option", { value: n, selected: n === reportDays }, `last ${n} day${n > 1 ? "s" : ""}`)));
  // The rate is of finished builds only: say how many finished and how many are still going,
  // so "100%" of 1 of 4 does not read as all four.
  const rate = (group) => {
    const finished = group.completed + group.blocked + group.cancelled;
    const going = group.unfinished ? ` · ${group.unfinished} unfinished` : "";
    return { label: group.name, value: group.success_rate === null ? 0 : group.success_rate * 100,
      text: group.success_rate === null ? `none finished${going}`
        : `${(group.success_rate * 100).toFixed(0)}% of ${finished} finished${going}` };
  };
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
        h("p", { class: "muted" }, `${recovery.overall.recovered} recovered, ${recovery.overall.unrecovered} not (yet)`)),
      // The sentence is the server's (the domain's words), not put together here.
      h("section", { class: "card", "data-testid": "savings" }, h("h2", {}, "What resuming saved"),
        h("p", { class: "big" }, savings.summary),
        h("p", { class: "muted" }, `${savings.totals.resumes} resumes · ${savings.totals.unknown_durations} stages without a recorded duration (not counted as zero)`))),
    attentionTable(`Blocked (${stuck.blocked.length})`, "blocked", stuck.blocked),
    attentionTable(`Stuck: nothing reported for over ${secs(stuck.stuck_after_secs)} (${stuck.stuck.length})`, "stuck", stuck.stuck));
}

function chartCard(title, testid, chart) {
  return h("section", { class: "card", "data-testid": testid }, h("h2", {}, title), chart);
}

function hbars(rows, max) {
  if (!rows.length) return h("p", { class: "muted" }, "No builds in this window.");
  // Room on the right for the value text ("67% of 3 finished · 2 unfinished").
  const row = 28, labelWidth = 130, width = 560, textWidth = 220;
  const svg = s("svg", { viewBox: `0 0 ${width} ${rows.length * row + 4}`, class: "chart", role: "img" });
  rows.forEach((item, i) => {
    const y = i * row + 4;
    const w = Math.max(1, ((width - labelWidth - textWidth) * item.value) / max);
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
