// o16n operator console: plain DOM, no framework, no build step.
// Security: every value from the API is rendered with textContent (never innerHTML);
// the access token lives in sessionStorage (this tab only) and goes out as a Bearer
// header, never a cookie, so a cross-site request carries no credentials.

const STORE = "o16n.console";
const $ = (id) => document.getElementById(id);

let tokens = load();
let view = "sessions";
let auditCursors = [];   // cursors of the pages shown so far ("" = newest)
let auditNext = null;
let generation = 0;      // only the latest view request renders

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE) || "null");
  } catch {
    return null;
  }
}

function save(pair, username) {
  tokens = { access: pair.access_token, refresh: pair.refresh_token, username };
  sessionStorage.setItem(STORE, JSON.stringify(tokens));
}

function forget() {
  tokens = null;
  sessionStorage.removeItem(STORE);
}

// ---- HTTP ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorOf(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && typeof body.message === "string") message = body.message;
  } catch { /* not JSON */ }
  return new ApiError(resp.status, message);
}

async function refreshTokens() {
  if (!tokens || !tokens.refresh) return false;
  const resp = await fetch("/login/refreshToken", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refreshToken: tokens.refresh }),
    credentials: "omit",
  });
  if (!resp.ok) return false;
  save(await resp.json(), tokens.username);
  return true;
}

async function api(method, path, body, retried = false) {
  if (!tokens) throw new ApiError(401, "not signed in");
  const headers = { Authorization: `Bearer ${tokens.access}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  if (resp.status === 401 && !retried && (await refreshTokens())) {
    return api(method, path, body, true);
  }
  if (resp.status === 401) {
    signedOut("Your sign-in has expired: sign in again.");
    throw new ApiError(401, "signed out");
  }
  if (resp.status === 403) {
    revoke(tokens && tokens.refresh); // this account has no use for its login here
    forget();
    signedOut("Owner role required: this account may not use the console.");
    throw new ApiError(403, "Owner role required");
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp.status === 204 ? null : resp.json();
}

// ---- DOM helpers (text only) -----------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "className") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(text(child)));
  }
  return node;
}

function text(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function cell(value, className = "") {
  return el("td", className ? { className } : {}, text(value));
}

function fillTable(table, rows, columns) {
  const body = table.tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    body.append(el("tr", {}, el("td", { className: "empty", colspan: String(columns) }, "Nothing here.")));
    return;
  }
  body.append(...rows);
}

function fillList(dl, entries) {
  dl.replaceChildren();
  for (const [key, value] of entries) dl.append(el("dt", {}, key), el("dd", {}, text(value)));
}

function bytes(n) {
  if (typeof n !== "number") return null;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : null;
}

function notify(message, isError = false) {
  const box = $("notice");
  box.textContent = message;
  box.classList.toggle("error", isError);
  box.hidden = !message;
}

async function act(button, label, action) {
  button.disabled = true;
  try {
    await action();
    notify(label);
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) notify(err.message, true);
  } finally {
    button.disabled = false;
  }
  await show(view);
}

// ---- Views -------------------------------------------------------------------------------

async function showSessions() {
  const stats = $("sessions-stats").checked ? "?stats=true" : "";
  const sessions = await api("GET", `/admin/sessions${stats}`);
  return () => renderSessions(sessions);
}

function renderSessions(sessions) {
  const rows = sessions.map((s) => {
    const stats = s.stats || {};
    const actions = el("td", { className: "actions" });
    if (s.state !== "dead") {
      actions.append(
        el("button", {
          type: "button", className: "secondary", dataset: { action: "cancel", id: s.id },
          onclick: (e) => act(e.currentTarget, `Interrupted session ${s.id}.`,
            () => api("POST", `/admin/sessions/${encodeURIComponent(s.id)}/cancel`)),
        }, "Cancel"),
        el("button", {
          type: "button", className: "danger", dataset: { action: "close", id: s.id },
          onclick: (e) => {
            if (!confirm(`Close session ${s.id} of ${s.owner}?`)) return;
            act(e.currentTarget, `Closed session ${s.id}.`,
              () => api("DELETE", `/admin/sessions/${encodeURIComponent(s.id)}`));
          },
        }, "Close"),
      );
    }
    return el("tr", { dataset: { session: s.id } },
      cell(s.id, "mono"), cell(s.name), cell(s.owner),
      cell(s.state === "dead" && s.deadReason ? `dead (${s.deadReason})` : s.state, `state-${s.state}`),
      cell(when(s.created)), cell(when(s.lastUsed)), cell(s.snapshotId, "mono"),
      cell(bytes(stats.memoryBytes)),
      cell(typeof stats.cpuPercent === "number" ? `${stats.cpuPercent} %` : null),
      actions);
  });
  fillTable($("sessions-table"), rows, 10);
}

async function showServices() {
  const services = await api("GET", "/admin/services");
  return () => renderServices(services);
}

function renderServices(services) {
  const rows = services.map((s) => {
    const pool = s.pool || {};
    const path = `/admin/services/${encodeURIComponent(s.name)}/${encodeURIComponent(s.version)}/recycle`;
    return el("tr", { dataset: { service: `${s.name}/${s.version}` } },
      cell(s.name), cell(s.version), cell(s.publisher),
      cell(`${text(pool.status)} (${text(pool.initial)}–${text(pool.max)})`),
      cell(pool.idle), cell(pool.busy), cell(pool.starting), cell(pool.queued), cell(pool.rejected),
      cell(s.requestsServed), cell(pool.lastError),
      el("td", { className: "actions" }, el("button", {
        type: "button", className: "secondary", dataset: { action: "recycle" },
        onclick: (e) => {
          if (!confirm(`Recycle the pool of ${s.name} ${s.version}?`)) return;
          act(e.currentTarget, `Recycling the pool of ${s.name} ${s.version}.`, () => api("POST", path));
        },
      }, "Recycle")));
  });
  fillTable($("services-table"), rows, 12);
}

async function showNode() {
  const node = await api("GET", "/admin/node");
  return () => renderNode(node);
}

function renderNode(node) {
  const drain = node.drain || {};
  $("drain-state").textContent = drain.draining
    ? `Draining since ${when(new Date(drain.since * 1000).toISOString())} by ${text(drain.by)}: ${text(drain.reason)}. New sessions, publishes and batches get 503.`
    : "Accepting new work.";
  $("drain-state").className = drain.draining ? "outcome-throttled" : "outcome-ok";
  $("drain-button").disabled = Boolean(drain.draining);
  $("undrain-button").disabled = !drain.draining;
  const engine = node.engine || {};
  fillList($("node-engine"), engine.error ? [["error", engine.error]] : [
    ["instance", node.instance], ["engine", engine.version], ["API", engine.apiVersion],
    ["runc", engine.runc], ["containerd", engine.containerd], ["kernel", engine.kernel],
    ["OS", engine.os], ["cgroup", `v${text(engine.cgroupVersion)} (${text(engine.cgroupDriver)})`],
    ["storage", engine.storageDriver], ["CPUs", engine.cpus], ["memory", bytes(engine.memoryBytes)],
    ["sessions", node.sessions], ["services", node.services],
  ]);
  const disk = node.disk || {};
  const data = disk.dataDir || {};
  const engineDisk = disk.engine || {};
  fillList($("node-disk"), [
    ["data directory", data.path], ["used", bytes(data.usedBytes)],
    ["free", bytes(data.freeBytes)], ["total", bytes(data.totalBytes)],
    ...Object.entries(engineDisk).map(([k, v]) => [`engine ${k}`, typeof v === "number" ? bytes(v) : v]),
  ]);
  const containers = node.containers || {};
  fillList($("node-containers"), containers.error ? [["error", containers.error]] :
    Object.entries(containers).map(([kind, states]) => [kind,
      Object.entries(states).map(([state, n]) => `${n} ${state}`).join(", ")]));
  const images = node.images || {};
  const runtime = images.runtime || {};
  fillList($("node-images"), [
    ["runtime", runtime.image], ["size", bytes(runtime.sizeBytes)],
    ["service images", images.services], ["snapshot images", images.snapshots],
    ...(images.error ? [["error", images.error]] : []),
  ]);
}

async function showAudit() {
  const params = new URLSearchParams({ limit: "50" });
  const actor = $("audit-actor").value.trim();
  const action = $("audit-action").value.trim();
  if (actor) params.set("actor", actor);
  if (action) params.set("action", action);
  const cursor = auditCursors[auditCursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  const page = await api("GET", `/admin/audit?${params}`);
  return () => renderAudit(page);
}

function renderAudit(page) {
  auditNext = page.nextCursor;
  $("audit-older").hidden = !auditNext;
  const rows = page.entries.map((e) => el("tr", { dataset: { action: e.action } },
    cell(when(e.time)), cell(e.actor), cell(e.address, "mono"), cell(e.action),
    cell(e.target, "mono"), cell(e.outcome, `outcome-${e.outcome}`), cell(e.status),
    cell(e.requestId, "mono"), cell(e.detail, "mono")));
  fillTable($("audit-table"), rows, 9);
}

const VIEWS = { sessions: showSessions, services: showServices, node: showNode, audit: showAudit };

async function show(name) {
  view = name;
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === name));
  }
  for (const key of Object.keys(VIEWS)) $(`view-${key}`).hidden = key !== name;
  document.body.dataset.view = name;
  delete document.body.dataset.loaded; // set again once the view shows fresh data
  const mine = ++generation;
  try {
    const render = await VIEWS[name]();
    if (mine !== generation) return; // a newer request (another tab, a filter) wins
    render();
    document.body.dataset.loaded = name;
  } catch (err) {
    if (err.status !== 401 && err.status !== 403) notify(err.message, true);
  }
}

// ---- Sign in / out ---------------------------------------------------------------------

function signedOut(message = "") {
  forget();
  $("app-view").hidden = true;
  $("who").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("login-error").hidden = !message;
  notify("");
  $("login-password").value = "";
}

async function signedIn() {
  $("login-view").hidden = true;
  $("who-name").textContent = tokens.username || "";
  $("who").hidden = false;
  // An account that is not an Owner learns it at once (the first call is a 403).
  try {
    await api("GET", "/admin/audit?limit=1");
  } catch {
    return;
  }
  $("app-view").hidden = false;
  await show(view);
}

async function signIn(event) {
  event.preventDefault();
  const username = $("login-user").value.trim();
  const password = $("login-password").value;
  $("login-submit").disabled = true;
  $("login-error").hidden = true;
  try {
    const resp = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
      credentials: "same-origin", // the login throttle's device cookie (path /login only)
    });
    if (!resp.ok) throw await errorOf(resp);
    save(await resp.json(), username);
    $("login-password").value = "";
    await signedIn();
  } catch (err) {
    signedOut(err.message);
  } finally {
    $("login-submit").disabled = false;
  }
}

async function revoke(refresh) {
  if (!refresh) return;
  try {
    await fetch(`/login/refreshToken?refreshToken=${encodeURIComponent(refresh)}`, {
      method: "DELETE", credentials: "omit",
    });
  } catch { /* it expires anyway */ }
}

async function signOut() {
  const refresh = tokens && tokens.refresh;
  forget();
  signedOut();
  notify("Signed out.");
  await revoke(refresh);
}

// ---- Wiring --------------------------------------------------------------------------------

$("login-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
$("refresh").addEventListener("click", () => show(view));
for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => { notify(""); show(tab.dataset.view); });
}
$("drain-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!confirm("Drain this node? New sessions, publishes and batches will get 503.")) return;
  const reason = $("drain-reason").value.trim();
  act($("drain-button"), "Draining.", () => api("POST", "/admin/node/drain", reason ? { reason } : {}));
});
$("undrain-button").addEventListener("click", (e) =>
  act(e.currentTarget, "Accepting new work again.", () => api("POST", "/admin/node/undrain", {})));
$("audit-form").addEventListener("submit", (event) => {
  event.preventDefault();
  auditCursors = [];
  show("audit");
});
$("sessions-stats").addEventListener("change", () => show("sessions"));
$("audit-newest").addEventListener("click", () => { auditCursors = []; show("audit"); });
$("audit-older").addEventListener("click", () => {
  if (auditNext) auditCursors.push(auditNext);
  show("audit");
});

if (tokens) signedIn(); else signedOut();
