// The gophermesh console: draws each frame of /v1/live/stream (every mesh held, each in
// its own section), and shifts weights with the control API, always naming the route's
// mesh. Every text from the mesh goes in through textContent, never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fde", "#e0772b", "#1f9d55", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d4ac0d", "#2c3e50", "#e84393"];

// The control token comes once, in the link `gophermesh console` prints.
const token = (() => {
  const m = location.hash.match(/token=([0-9a-fA-F]+)/);
  if (m) {
    sessionStorage.setItem("gophermesh-token", m[1]);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("gophermesh-token");
})();

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const svg = (tag, attrs = {}, text) => {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};
const pct = (x) => (Math.round(x * 10) / 10).toFixed(1) + "%";

// Each node keeps its colour: the nodes of a mesh in name order take the palette in order
// (set per mesh as it is drawn).
let nodeColors = new Map();
const colorOf = (name) => nodeColors.get(name) || "#7f8c8d";

// Per route form, what the user typed and not yet applied.
const edits = new Map();
let lastFrame = null;

function setAuth() {
  const auth = $("auth");
  auth.textContent = token ? "signed in: changes allowed" : "read-only: run `gophermesh console` for a sign-in link";
}

// The point at `t` along the cubic Bezier curve p0 p1 p2 p3.
function along(p0, p1, p2, p3, t) {
  const u = 1 - t;
  const w = [u * u * u, 3 * u * u * t, 3 * u * t * t, t * t * t];
  return [0, 1].map((k) => w[0] * p0[k] + w[1] * p1[k] + w[2] * p2[k] + w[3] * p3[k]);
}

// Draws mesh `frame` (one mesh of a frame) in the svg `g`.
function drawGraph(g, frame) {
  g.replaceChildren();
  const gateways = frame.gateways || [];
  // Virtual gateways (when the mesh has any), services, routers, routes, nodes.
  const cols = gateways.length ? [[], [], [], [], []] : [[], [], [], []];
  const [gw, sv, rt, ro, no] = gateways.length ? cols : [[], ...cols];
  const pos = new Map();
  for (const gate of gateways) gw.push({ key: "g:" + gate.name, kind: "virtual gateway", name: gate.name, state: gate.task });
  for (const s of frame.services) sv.push({ key: "s:" + s.name, kind: "virtual service", name: s.name });
  for (const r of frame.routers) {
    rt.push({ key: "r:" + r.name, kind: "virtual router", name: r.name });
    for (const route of r.routes) ro.push({ key: "t:" + r.name + "/" + route.name, kind: "route", name: route.name });
  }
  for (const n of frame.nodes) no.push({ key: "n:" + n.name, kind: "virtual node", name: n.name, state: n.task });
  // Columns left to right; on a narrow screen rows top to bottom instead.
  const vertical = g.getBoundingClientRect().width < 640;
  const boxW = vertical ? 150 : (cols.length > 4 ? 170 : 190), boxH = 44, gap = 16;
  const most = Math.max(1, ...cols.map((c) => c.length));
  const W = vertical ? Math.max(400, most * (boxW + gap) + 20) : 1000;
  const H = vertical ? cols.length * (boxH + 60) : most * (boxH + gap) + 30;
  const step = (W - 20 - boxW) / (cols.length - 1);
  g.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const maxChars = vertical ? 19 : 26;
  cols.forEach((col, ci) => {
    const start = vertical ? (W - col.length * (boxW + gap)) / 2 : (H - col.length * (boxH + gap)) / 2;
    col.forEach((item, i) => {
      const x = vertical ? start + i * (boxW + gap) : 10 + ci * step;
      const y = vertical ? 10 + ci * (boxH + 60) : start + i * (boxH + gap);
      pos.set(item.key, { x, y });
      const box = svg("g", { "data-key": item.key });
      box.append(svg("rect", { x, y, width: boxW, height: boxH, class: item.state || "" }));
      box.append(svg("text", { x: x + 10, y: y + 15, class: "kind" }, item.kind + (item.state && item.state !== "none" ? " · " + item.state : "")));
      box.append(svg("text", { x: x + 10, y: y + 33 }, item.name.length > maxChars ? item.name.slice(0, maxChars - 1) + "…" : item.name));
      g.append(box);
    });
  });
  const edge = (from, to, label) => {
    const a = pos.get(from), b = pos.get(to);
    if (!a || !b) return;
    let d, lx, ly;
    if (vertical) {
      const x1 = a.x + boxW / 2, y1 = a.y + boxH, x2 = b.x + boxW / 2, y2 = b.y, my = (y1 + y2) / 2;
      d = `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
      [lx, ly] = along([x1, y1], [x1, my], [x2, my], [x2, y2], 0.7);
      lx += 12;
    } else {
      const x1 = a.x + boxW, y1 = a.y + boxH / 2, x2 = b.x, y2 = b.y + boxH / 2, mx = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
      // Near the route, where its edges have parted but not yet met another route's.
      [lx, ly] = along([x1, y1], [mx, y1], [mx, y2], [x2, y2], 0.3);
      ly -= 4;
    }
    g.prepend(svg("path", { d, "data-edge": from + "->" + to }));
    if (label !== undefined) {
      g.append(svg("text", { x: lx, y: ly, "text-anchor": "middle", class: "weight", "data-route": label.route, "data-weight": label.node, "data-value": label.weight }, String(label.weight)));
    }
  };
  for (const gate of gateways) {
    for (const route of gate.routes) edge("g:" + gate.name, "s:" + route.service);
  }
  for (const s of frame.services) {
    if (s.router) edge("s:" + s.name, "r:" + s.router);
    if (s.node) edge("s:" + s.name, "n:" + s.node);
  }
  for (const r of frame.routers) {
    for (const route of r.routes) {
      edge("r:" + r.name, "t:" + r.name + "/" + route.name);
      for (const t of route.targets) edge("t:" + r.name + "/" + route.name, "n:" + t.node, { ...t, route: r.name + "/" + route.name });
    }
  }
}

function nodeOf(frame, name) {
  return frame.nodes.find((n) => n.name === name) || {};
}

function chart(frame, targets) {
  const c = svg("svg", { class: "chart", viewBox: "0 0 400 140", role: "img", "aria-label": "requests per second per target, up to the last five minutes" });
  const now = frame.at;
  let max = 1, first = now;
  for (const t of targets) for (const [ts, r] of nodeOf(frame, t.node).series || []) { max = Math.max(max, r); first = Math.min(first, ts); }
  // The window grows with the series, from 30 s up to five minutes.
  const span = Math.max(30, Math.min(300, now - first));
  c.append(svg("line", { x1: 30, y1: 120, x2: 395, y2: 120, class: "axis" }));
  c.append(svg("text", { x: 2, y: 14 }, Math.round(max) + "/s"));
  c.append(svg("text", { x: 2, y: 124 }, "0"));
  c.append(svg("text", { x: 30, y: 136 }, span >= 120 ? `-${Math.round(span / 60)} min` : `-${Math.round(span)} s`));
  c.append(svg("text", { x: 372, y: 136 }, "now"));
  for (const t of targets) {
    const pts = (nodeOf(frame, t.node).series || []).filter(([ts]) => ts >= now - span);
    if (pts.length < 2) continue;
    const d = pts.map(([ts, r], i) => `${i ? "L" : "M"}${(30 + ((ts - (now - span)) / span) * 365).toFixed(1)},${(120 - (r / max) * 105).toFixed(1)}`).join(" ");
    c.append(svg("path", { d, stroke: colorOf(t.node) }));
  }
  return c;
}

// A route's card: its weights form and its traffic. Its key is `MESH:ROUTER/ROUTE`.
function routeCard(frame, router, route) {
  const mesh = frame.name;
  const key = mesh + ":" + router.name + "/" + route.name;
  const card = el("div", { class: "route", "data-route": key });
  const left = el("div");
  left.append(el("h3", {}, `${router.name} · route ${route.name}`));
  const form = el("form", { "aria-label": `weights of route ${route.name}` });
  const total = route.targets.reduce((a, t) => a + t.weight, 0);
  const seen = route.targets.map((t) => t.observed ?? nodeOf(frame, t.node).observed ?? 0);
  const seenTotal = seen.reduce((a, b) => a + b, 0);
  const pending = edits.get(key) || {};
  route.targets.forEach((t, i) => {
    const id = `w-${key}-${t.node}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const row = el("div", { class: "target" });
    const label = el("label", { for: id }, t.node);
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = colorOf(t.node);
    label.prepend(swatch);
    const input = el("input", { id, type: "number", min: "0", max: "100", step: "1", inputmode: "numeric", "data-node": t.node });
    input.value = pending[t.node] ?? t.weight;
    input.disabled = !token;
    input.addEventListener("input", () => {
      const e = edits.get(key) || {};
      e[t.node] = input.value;
      edits.set(key, e);
    });
    const bar = el("div", { class: "bar", title: "configured share (upper) and observed share (lower)" });
    const conf = el("span");
    conf.style.width = total ? (100 * t.weight) / total + "%" : "0";
    conf.style.background = colorOf(t.node);
    conf.style.height = "50%";
    const obs = el("span");
    obs.style.width = seenTotal ? (100 * seen[i]) / seenTotal + "%" : "0";
    obs.style.background = colorOf(t.node);
    obs.style.opacity = ".55";
    obs.style.top = "50%";
    bar.append(conf, obs);
    row.append(label, input, bar);
    form.append(row);
  });
  const actions = el("div", { class: "actions" });
  const apply = el("button", { type: "submit", "data-apply": key }, "Apply weights");
  apply.disabled = !token;
  const message = el("div", { role: "alert", class: "refusal", "data-refusal": key });
  const prev = document.querySelector(`[data-refusal="${CSS.escape(key)}"]`);
  if (prev) {
    message.textContent = prev.textContent;
    message.className = prev.className;
    if (prev.dataset.reached) message.dataset.reached = prev.dataset.reached;
  }
  actions.append(apply);
  form.append(actions, message);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    shift(router.name, route.name, key, form, message, mesh);
  });
  left.append(form);

  const right = el("div");
  const observed = el("p", { "data-observed": key });
  observed.append(el("strong", {}, `observed since version ${frame.observed_since_version}: `));
  route.targets.forEach((t, i) => {
    const share = seenTotal ? (100 * seen[i]) / seenTotal : 0;
    observed.append(el("span", { "data-node": t.node, "data-share": share.toFixed(1), "data-count": String(seen[i]) }, `${t.node} ${pct(share)} (${seen[i]}) `));
  });
  if (!seenTotal) observed.append(el("span", { class: "muted" }, "no requests yet"));
  right.append(observed, chart(frame, route.targets));
  const legend = el("div", { class: "legend" });
  for (const t of route.targets) {
    const tr = nodeOf(frame, t.node).traffic;
    const item = el("span");
    const sw = el("span", { class: "swatch" });
    sw.style.background = colorOf(t.node);
    item.append(sw, document.createTextNode(
      `${t.node}: ${tr ? tr.rps.toFixed(1) : "0.0"}/s, success ${tr && tr.success_rate != null ? pct(tr.success_rate * 100) : "–"}, p50 ${tr && tr.p50_ms != null ? tr.p50_ms.toFixed(1) : "–"} ms, p99 ${tr && tr.p99_ms != null ? tr.p99_ms.toFixed(1) : "–"} ms`));
    legend.append(item);
  }
  right.append(legend);
  card.append(left, right);
  return card;
}

// How long a shift's answer waits for the Envoys to take the change.
const SHIFT_WAIT = "10s";

// What a change's answer says of the Envoys (`reached`): in effect at every one, refused
// by some (in red: the route stays as it was on those Envoys), or not yet taken by some.
function shown(message, body) {
  const reached = body.reached;
  if (reached && reached.refused) {
    message.dataset.reached = "refused";
    message.className = "refusal";
    message.textContent = `stored as mesh version ${body.version}, but refused by ` +
      reached.refused.map((r) => `${r.envoy} (${r.nack.message || "no reason given"})`).join(", ") +
      "; those Envoys keep their last good configuration";
  } else if (reached && reached.waiting) {
    message.dataset.reached = "waiting";
    message.className = "note";
    message.textContent = `applied: mesh version ${body.version}; not yet taken within ${SHIFT_WAIT} by ${reached.waiting.join(", ")}`;
  } else {
    message.dataset.reached = "all";
    message.className = "note";
    message.textContent = `applied: mesh version ${body.version}, in effect at every Envoy`;
  }
}

async function shift(router, route, key, form, message, mesh) {
  const weights = {};
  for (const input of form.querySelectorAll("input[data-node]")) {
    const v = Number(input.value);
    weights[input.dataset.node] = Number.isInteger(v) ? v : input.value;
  }
  message.className = "refusal";
  message.textContent = "";
  delete message.dataset.reached;
  try {
    // The answer waits (up to SHIFT_WAIT) until every Envoy took the change, or one refused it.
    const of = `&mesh=${encodeURIComponent(mesh)}&wait=${SHIFT_WAIT}`;
    const r = await fetch(`/v1/routes/${encodeURIComponent(route)}/weights?router=${encodeURIComponent(router)}${of}`, {
      method: "PUT",
      headers: { "content-type": "application/json", authorization: "Bearer " + token },
      body: JSON.stringify({ weights }),
    });
    const body = await r.json();
    if (r.ok) {
      edits.delete(key);
      shown(message, body);
    } else {
      delete message.dataset.reached;
      message.textContent = "refused; nothing was changed:\n" + (body.problems || []).join("\n");
    }
  } catch (e) {
    message.textContent = "cannot reach the control plane: " + e;
  }
}

function nodeCard(n) {
  const card = el("article", { class: "card", "data-node": n.name });
  const h = el("h3", {}, n.name + " ");
  h.append(el("span", { class: "state " + n.task, "data-state": n.task }, n.task));
  card.append(h);
  const dl = el("dl");
  const add = (k, v, attrs = {}) => dl.append(el("dt", {}, k), el("dd", attrs, v));
  add("restarts", String(n.restarts));
  if (n.envoy) {
    add("Envoy", n.envoy.connected ? "connected" : "disconnected");
    add("in sync at", n.envoy.synced_version != null ? "version " + n.envoy.synced_version : "–");
    const nack = n.envoy.last_nack;
    if (nack) {
      // A NACK of a version later than the one the Envoy is in sync at: it refuses the
      // configuration now (it keeps serving its last good one), in red.
      const refusing = n.envoy.synced_version == null || Number(nack.version) > n.envoy.synced_version;
      if (refusing) card.classList.add("refusing");
      add(refusing ? "refuses" : "last NACK", `version ${nack.version}: ${nack.message}`,
        refusing ? { class: "refusal", "data-refused": nack.version } : {});
    }
  } else {
    add("Envoy", "never connected");
  }
  if (n.traffic) add("inbound via mesh", `${n.traffic.rps.toFixed(1)}/s`);
  for (const c of n.certificates || []) {
    // Each certificate its listeners serve (ACM, or its mesh certificate): whose, by whom,
    // until when.
    add(c.kind === "mesh-certificate" ? "mesh certificate" : "certificate",
      `${c.subject}, issued by ${c.issuer}, expires ${c.not_after}` + (c.error ? ` (last read failed: ${c.error})` : ""),
      { class: "certificate", "data-expires": c.not_after });
  }
  card.append(dl);
  return card;
}

function render(frame) {
  lastFrame = frame;
  const meshes = frame.meshes || [];
  document.body.dataset.frames = String(Number(document.body.dataset.frames || 0) + 1);
  $("mesh").textContent = meshes.length ? (meshes.length === 1 ? "mesh " : "meshes ") + meshes.map((m) => m.name).join(", ") : "no mesh yet";
  $("version").textContent = "version " + frame.version;
  const focused = document.activeElement && document.activeElement.id;
  const container = $("meshes");
  const sections = meshes.map((m) => {
    const held = [...container.children].find((s) => s.dataset.mesh === m.name);
    const section = held || meshSection(m.name);
    drawMesh(section, { ...m, at: frame.at, observed_since_version: frame.observed_since_version });
    return section;
  });
  container.replaceChildren(...sections);
  if (!sections.length) container.append(el("p", { class: "muted" }, "no mesh yet: make one with `gophermesh apply` or the App Mesh API"));
  if (focused) {
    const again = document.getElementById(focused);
    if (again) again.focus();
  }
  $("history").replaceChildren(...frame.history.map((h) => el("li", {},
    `version ${h.version} at ${h.at.replace("T", " ").replace("Z", "")}: ${h.what}; ` +
    (h.acked_ms != null ? `ACKed by every Envoy in ${h.acked_ms.toFixed(1)} ms` : "waiting for every Envoy's ACK"))));
}

// The (empty) section of mesh `name`: its graph, its routes and its virtual nodes.
function meshSection(name) {
  const section = el("section", { class: "wide mesh", "data-mesh": name, "aria-label": "mesh " + name });
  section.append(el("h2", {}, "mesh " + name));
  section.append(svg("svg", { class: "graph", role: "img", "aria-label": `mesh ${name}: virtual services, routers, routes and virtual nodes, edges labelled with weights` }));
  section.append(el("h3", {}, "Routes"), el("div", { class: "routes" }));
  section.append(el("h3", {}, "Rollouts"), el("div", { class: "rollouts" }));
  section.append(el("h3", {}, "Virtual nodes"), el("div", { class: "cards nodes" }));
  return section;
}

// A rollout: where it is, and its last events as a timeline, newest last.
function rolloutCard(r) {
  const card = el("div", { class: "card rollout", "data-rollout": r.router + "/" + r.route, "data-phase": r.phase });
  const why = r.reason ? ` (${r.reason})` : "";
  card.append(el("h4", {}, `${r.router}/${r.route} → ${r.target}`));
  const where = r.ab ? `in its A/B stage (requests with ${r.ab.header}: ${r.ab.value})` : `at ${r.weight}%`;
  card.append(el("p", {}, `${r.phase}${why} ${where}, failed checks ${r.failedChecks}/${r.maxFailedChecks}`));
  const list = el("ol", { class: "timeline" });
  for (const e of r.events) {
    const at = new Date(e.atMs).toISOString().slice(11, 19);
    list.append(el("li", { "data-kind": e.kind }, `${at} ${e.kind}: ${e.message}`));
  }
  card.append(list);
  return card;
}

// Draws mesh `frame` into its `section`.
function drawMesh(section, frame) {
  nodeColors = new Map(frame.nodes.map((n, i) => [n.name, COLORS[i % COLORS.length]]));
  drawGraph(section.querySelector(".graph"), frame);
  const routes = section.querySelector(".routes");
  const cards = routeCards(routes, frame, frame.routers);
  routes.replaceChildren(...cards);
  if (!cards.length) routes.append(el("p", { class: "muted" }, "no routes"));
  section.querySelector(".nodes").replaceChildren(...frame.nodes.map(nodeCard));
  const rollouts = section.querySelector(".rollouts");
  rollouts.replaceChildren(...(frame.rollouts || []).map(rolloutCard));
  if (!rollouts.children.length) rollouts.append(el("p", { class: "muted" }, "none: start one with `gophermesh rollout start ROUTE --to NODE`"));
}

// The route cards of `routers` of mesh `frame`, built before the old cards in `container`
// go, so that each keeps its message. A card someone is typing in keeps its form as it is
// (only its figures are new).
function routeCards(container, frame, routers) {
  const cards = [];
  for (const r of routers) {
    for (const route of r.routes) {
      const fresh = routeCard(frame, r, route);
      const key = fresh.dataset.route;
      const old = [...container.children].find((c) => c.dataset.route === key);
      const busy = old && (old.contains(document.activeElement) || edits.has(key));
      if (busy && old.children.length === 2 && fresh.children.length === 2) {
        old.replaceChild(fresh.children[1], old.children[1]);
        cards.push(old);
      } else {
        cards.push(fresh);
      }
    }
  }
  return cards;
}

function connect() {
  const conn = $("conn");
  const source = new EventSource("/v1/live/stream");
  source.addEventListener("frame", (e) => {
    conn.textContent = "live";
    conn.className = "pill live";
    render(JSON.parse(e.data));
  });
  source.onerror = () => {
    conn.textContent = "reconnecting…";
    conn.className = "pill down";
  };
}

setAuth();
window.addEventListener("resize", () => { if (lastFrame) render(lastFrame); });
fetch("/v1/live").then((r) => r.json()).then((f) => { if (!lastFrame) render(f); }).catch(() => {});
connect();
