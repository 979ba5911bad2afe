// sonicsort's web page: plain JavaScript on the /v1 API, nothing fetched from elsewhere.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  colours: {},         // genre → colour
  seeds: [],           // [{id, title, artist}]
  from: null, to: null, // path ends
  browse: { q: "", genre: "", tag: "", cursor: null },
  lastList: null,      // {kind, body} of the last playlist or path, for the M3U8 download
  queue: [], queuePos: -1,
  alchemy: { add: [], subtract: [] }, // [{id, title}]
  listener: "",        // the user whose plays the player records
  played: null,        // the id of the track whose play was recorded, until the next starts
  map: null,
};

// ------------------------------------------------------------------ helpers
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v; // CSSOM: allowed by the page's Content-Security-Policy
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

// Every call goes through here: JSON in and out, problem+json errors become ApiError(detail).
async function api(path, { method = "GET", body, json, accept } = {}) {
  const opts = { method, headers: {} };
  if (json !== undefined) { opts.body = JSON.stringify(json); opts.headers["Content-Type"] = "application/json"; }
  else if (body !== undefined) opts.body = body;
  if (accept) opts.headers.Accept = accept;
  let resp;
  try { resp = await fetch(path, opts); }
  catch (e) { throw new ApiError(0, "the server cannot be reached; is it running?"); }
  if (!resp.ok) {
    let detail = `${resp.status} ${resp.statusText}`;
    try { const p = await resp.json(); detail = p.detail || p.title || detail; } catch (e) { /* not JSON */ }
    throw new ApiError(resp.status, detail);
  }
  if (accept && accept !== "application/json") return resp;
  return resp.status === 204 ? null : resp.json();
}

// Show a busy state and an error box around an async step; returns its result or null.
async function busy(prefix, work) {
  const err = $(`#${prefix}-error`), load = $(`#${prefix}-loading`);
  err.hidden = true; err.textContent = "";
  if (load) load.hidden = false;
  try { return await work(); }
  catch (e) {
    err.textContent = e instanceof ApiError ? e.message : `Something went wrong: ${e.message}`;
    err.hidden = false;
    return null;
  } finally { if (load) load.hidden = true; }
}

const pct = (p) => `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)}%`;
const mmss = (s) => `${Math.floor(s / 60)}:${String(Math.round(s % 60)).padStart(2, "0")}`;

function colourOf(genre) {
  if (!(genre in state.colours)) {
    const i = Object.keys(state.colours).length;
    state.colours[genre] = `hsl(${(i * 137.508) % 360} 65% 48%)`; // golden angle: distinct neighbours
  }
  return state.colours[genre];
}

function chip(genre) {
  return h("span", { class: "chip", style: `--c:${colourOf(genre)}` }, genre);
}

// One audio player plays at a time.
document.addEventListener("play", (ev) => {
  for (const a of document.querySelectorAll("audio")) if (a !== ev.target) a.pause();
}, true);

// ------------------------------------------------------------------ track lists
function bars(container, probabilities) {
  container.replaceChildren();
  const items = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [g, p] of items) {
    container.append(h("div", { class: "bar", role: "listitem", "data-genre": g, "data-p": p },
      h("span", { class: "bar-label" }, g),
      h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: `width:${(100 * p).toFixed(2)}%;--c:${colourOf(g)}` })),
      h("span", { class: "bar-value" }, pct(p))));
  }
}

// The front end's top tags as chips; a click lists the catalog tracks with that tag.
function tagChips(container, topTags) {
  container.replaceChildren();
  for (const { tag, probability } of topTags || []) {
    container.append(h("li", { class: "chip tag", "data-tag": tag },
      h("a", { href: "#/browse", title: `probability ${pct(probability)}: list tracks with this tag`,
        onclick: () => browseTag(tag) }, tag), " ", h("span", { class: "muted" }, pct(probability))));
  }
  if (!container.children.length) container.append(h("li", { class: "chip empty" }, "no tags (a v1 model)"));
}

function browseTag(tag) {
  state.browse.tag = tag;
  $("#browse-tag-name").textContent = tag;
  $("#browse-tag").hidden = !tag;
  $("#browse-list").replaceChildren();
  delete $("#browse-list").dataset.count;
  if (location.hash === "#/browse") search();
}

function addSeed(t) {
  if (!state.seeds.some((s) => s.id === t.id)) state.seeds.push({ id: t.id, title: t.title, artist: t.artist });
  saveLocal(); renderSeeds(); flash(`Added “${t.title}” to the seeds`);
}

function setEnd(which, t) {
  state[which] = { id: t.id, title: t.title, artist: t.artist };
  saveLocal(); renderEnds(); flash(`Path ${which}: “${t.title}”`);
}

// A list item for a track (a catalog track or a scored result).
function trackItem(t, { scored = false, compact = false, list = null, index = 0 } = {}) {
  const title = h("a", { href: `#/track/${t.id}`, class: "t-title" }, t.title || `Track ${t.id}`);
  const meta = h("div", { class: "t-meta" }, title, " ",
    h("span", { class: "muted" }, t.artist || "unknown artist"), " ", chip(t.genre));
  const why = scored ? h("div", { class: "why small muted" },
    h("span", { title: "embedding cosine similarity" }, `similarity ${t.similarity.toFixed(3)}`), " · ",
    h("span", { title: "agreement of genre probabilities" }, `genre agreement ${t.genre_agreement.toFixed(3)}`), " · ",
    h("b", { class: "score", title: "final score" }, `score ${t.score.toFixed(3)}`)) : null;
  const audio = compact ? null : h("audio", { controls: true, preload: "none", src: t.audio_url });
  if (audio && list) audio.addEventListener("play", () => { state.queue = list; state.queuePos = index; });
  const actions = h("div", { class: "row-actions" },
    h("button", { type: "button", class: "seed", onclick: () => addSeed(t) }, "+ Seed"),
    compact ? h("button", { type: "button", class: "play", onclick: () => playNow(t, list, index) }, "▶") : null,
    h("button", { type: "button", class: "similar", onclick: () => { location.hash = `#/track/${t.id}`; } }, "Similar"),
    h("button", { type: "button", class: "from", onclick: () => setEnd("from", t) }, "From"),
    h("button", { type: "button", class: "to", onclick: () => setEnd("to", t) }, "To"),
    h("button", { type: "button", class: "alchemy-add", title: "alchemy: towards this track", onclick: () => addAlchemy("add", t) }, "+"),
    h("button", { type: "button", class: "alchemy-subtract", title: "alchemy: away from this track", onclick: () => addAlchemy("subtract", t) }, "−"));
  return h("li", { class: "track", "data-id": t.id, "data-genre": t.genre, "data-artist": t.artist || "" },
    h("div", { class: "t-main" }, meta, why), audio, actions);
}

function fillList(ol, items, opts = {}) {
  ol.replaceChildren(...items.map((t, i) => trackItem(t, { ...opts, list: items, index: i })));
  ol.dataset.count = String(items.length);
}

// The bottom player: for the map, "play all" and compact lists.
function playNow(t, list = null, index = 0) {
  const bar = $("#player-bar"), player = $("#player");
  bar.hidden = false;
  $("#now-title").textContent = `${t.title}${t.artist ? " · " + t.artist : ""}`;
  player.src = t.audio_url;
  state.played = null;
  player.play().catch(() => { /* autoplay refused: the controls are there */ });
  if (list) { state.queue = list; state.queuePos = index; }
  showQueueLength();
}
function playNext() {
  if (state.queuePos + 1 < state.queue.length) {
    state.queuePos += 1;
    playNow(state.queue[state.queuePos], state.queue, state.queuePos);
  }
}
function showQueueLength() { $("#player-bar").dataset.queue = String(state.queue.length); }

// "Continue": the tracks that continue the queue, added at its end.
async function continueQueue() {
  const played = state.queue.map((t) => t.id).slice(-500);
  if (!played.length) { flash("Play something first: Continue adds what follows it"); return; }
  let out;
  try { out = await api("/v1/queue/next", { method: "POST", json: { queue: played, count: 10 } }); }
  catch (e) { flash(`Could not continue the queue: ${e.message}`); return; }
  state.queue = [...state.queue, ...out.items];
  showQueueLength();
  flash(`Added ${out.items.length} tracks to the queue` + (out.relaxed ? " (the catalog is small: artists or albums come back sooner)" : ""));
}

// A play counts once per start, after 30 s or half the track, for the listener named on the page.
function recordPlay() {
  const player = $("#player"), t = state.queue[state.queuePos];
  if (!t || !state.listener || state.played === t.id || !player.duration) return;
  if (player.currentTime < Math.min(30, player.duration / 2)) return;
  state.played = t.id;
  api("/v1/plays", { method: "POST", json: { user: state.listener, track_ids: [t.id] } })
    .then(() => { $("#player-bar").dataset.played = String(t.id); })
    .catch((e) => flash(`The play was not recorded: ${e.message}`));
}

let flashTimer = null;
function flash(text) {
  const s = $("#status");
  s.textContent = text;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { s.textContent = ""; }, 2500);
}

// ------------------------------------------------------------------ identify
async function identify(file) {
  if (!file) return;
  $("#identify-result").hidden = true;
  const k = $("#id-k").value || "10", mode = $("#id-mode").value;
  const form = new FormData();
  form.append("file", file, file.name);
  const out = await busy("identify", () => api(`/v1/predict?k=${encodeURIComponent(k)}&genre_mode=${mode}`,
    { method: "POST", body: form }));
  if (!out) return;
  $("#pred-file").textContent = file.name;
  $("#pred-genre").textContent = out.genre;
  $("#pred-genre").style.setProperty("--c", colourOf(out.genre));
  $("#pred-conf").textContent = pct(out.probabilities[out.genre] ?? 0);
  $("#pred-cached").hidden = !out.cached;
  $("#pred-model").textContent = out.model_version;
  const audio = $("#pred-audio");
  if (audio.src.startsWith("blob:")) URL.revokeObjectURL(audio.src);
  audio.src = URL.createObjectURL(file);
  bars($("#pred-chart"), out.probabilities);
  tagChips($("#pred-tags"), out.top_tags);
  fillList($("#identify-similar"), out.similar, { scored: true });
  $("#identify-result").hidden = false;
}

function setUpIdentify() {
  const input = $("#file"), drop = $("#drop");
  input.addEventListener("change", () => identify(input.files[0]));
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); identify(e.dataTransfer.files[0]); });
}

// ------------------------------------------------------------------ browse
async function search(more = false) {
  const b = state.browse;
  if (!more) { b.q = $("#search-q").value.trim(); b.genre = $("#search-genre").value; b.cursor = null; }
  const qs = new URLSearchParams({ limit: "25" });
  if (b.q) qs.set("q", b.q);
  if (b.genre) qs.set("genre", b.genre);
  if (b.tag) qs.set("tag", b.tag);
  if (more && b.cursor) qs.set("cursor", b.cursor);
  const page = await busy("browse", () => api(`/v1/tracks?${qs}`));
  if (!page) return;
  const ol = $("#browse-list");
  if (!more) ol.replaceChildren();
  const items = page.items;
  const offset = ol.children.length;
  items.forEach((t, i) => ol.append(trackItem(t, { index: offset + i })));
  ol.dataset.count = String(ol.children.length);
  b.cursor = page.next_cursor;
  $("#browse-more").hidden = !page.next_cursor;
  $("#browse-empty").hidden = ol.children.length > 0;
}

async function showTrack(id) {
  $("#track-card").hidden = true;
  $("#similar-list").replaceChildren();
  const t = await busy("track", () => api(`/v1/tracks/${id}`));
  if (!t) return;
  state.track = t;
  $("#track-title").textContent = t.title;
  $("#track-artist").textContent = t.artist || "unknown artist";
  $("#track-album").textContent = t.album ? ` · ${t.album}` : "";
  const g = $("#track-genre");
  g.textContent = t.genre; g.style.setProperty("--c", colourOf(t.genre));
  $("#track-duration").textContent = mmss(t.duration_s);
  $("#track-audio").src = t.audio_url;
  bars($("#track-chart"), t.probabilities);
  tagChips($("#track-tags"), t.top_tags);
  $("#track-card").hidden = false;
  await Promise.all([similar(), similarArtists(t)]);
}

async function similarArtists(t) {
  $("#artists-card").hidden = true;
  let out;
  try { out = await api(`/v1/artists/${encodeURIComponent(t.artist_id)}/similar?count=6`); }
  catch (e) { return; /* no other artist, or the catalog changed: the card stays hidden */ }
  $("#artists-of").textContent = t.album_artist || t.artist || "this artist";
  $("#similar-artists").replaceChildren(...out.items.map((a) => h("li", { class: "chip", "data-id": a.id },
    h("a", { href: "#/browse", onclick: () => { $("#search-q").value = a.name; state.browse.q = a.name; $("#browse-list").replaceChildren(); delete $("#browse-list").dataset.count; } },
      a.name), h("span", { class: "muted small" }, ` ${a.similarity.toFixed(2)}`))));
  $("#artists-card").hidden = out.items.length === 0;
}

async function similar() {
  const t = state.track;
  if (!t) return;
  const qs = new URLSearchParams({ k: $("#sim-k").value || "10", genre_mode: $("#sim-mode").value });
  const boost = $("#sim-boost").value;
  if ($("#sim-mode").value === "boost") qs.set("boost_weight", boost);
  for (const [id, name] of [["#sim-genre", "genre"], ["#sim-cap", "artist_cap"], ["#sim-mmr", "mmr_lambda"]]) {
    if ($(id).value) qs.set(name, $(id).value);
  }
  const out = await busy("similar", () => api(`/v1/tracks/${t.id}/similar?${qs}`));
  if (out) fillList($("#similar-list"), out.items, { scored: true });
}

function setUpBrowse() {
  $("#search-form").addEventListener("submit", () => search());
  $("#search-genre").addEventListener("change", () => search());
  $("#browse-more").addEventListener("click", () => search(true));
  $("#browse-tag-clear").addEventListener("click", () => browseTag(""));
  for (const id of ["#sim-k", "#sim-mode", "#sim-genre", "#sim-cap", "#sim-mmr", "#sim-boost"]) {
    $(id).addEventListener("change", similar);
  }
  $("#sim-boost").addEventListener("input", () => { $("#sim-boost-out").textContent = Number($("#sim-boost").value).toFixed(2); });
  $("#track-seed").addEventListener("click", () => addSeed(state.track));
  $("#track-from").addEventListener("click", () => setEnd("from", state.track));
  $("#track-to").addEventListener("click", () => setEnd("to", state.track));
}

// ------------------------------------------------------------------ playlists and paths
function saveLocal() {
  try { localStorage.setItem("sonicsort", JSON.stringify({ seeds: state.seeds, from: state.from, to: state.to })); }
  catch (e) { /* private mode */ }
}
function loadLocal() {
  try {
    const s = JSON.parse(localStorage.getItem("sonicsort") || "{}");
    state.seeds = Array.isArray(s.seeds) ? s.seeds : [];
    state.from = s.from || null; state.to = s.to || null;
  } catch (e) { /* nothing saved */ }
}

function renderSeeds() {
  const ul = $("#seeds");
  ul.replaceChildren(...state.seeds.map((s) => h("li", { class: "chip seed-chip", "data-id": s.id },
    s.title, h("button", { type: "button", "aria-label": `remove ${s.title}`, onclick: () => {
      state.seeds = state.seeds.filter((x) => x.id !== s.id); saveLocal(); renderSeeds();
    } }, "×"))));
  $("#seeds-empty").hidden = state.seeds.length > 0;
}
function renderEnds() {
  for (const which of ["from", "to"]) {
    const el = $(`#path-${which}`), t = state[which];
    el.textContent = t ? `${t.title}${t.artist ? " · " + t.artist : ""}` : "choose a track";
    el.classList.toggle("empty", !t);
    el.dataset.id = t ? t.id : "";
  }
}

async function pick() {
  const q = $("#pick-q").value.trim();
  const qs = new URLSearchParams({ limit: "8" });
  if (q) qs.set("q", q);
  const page = await busy("playlist", () => api(`/v1/tracks?${qs}`));
  if (page) fillList($("#pick-list"), page.items, { compact: true });
}

function showList(kind, body, out) {
  state.lastList = { kind, body, items: out.items };
  const n = out.items.length;
  const what = kind === "playlists" ? `Playlist of ${n}` : kind === "paths" ? `Path of ${n}` : `Alchemy: ${n} tracks`;
  $("#playlist-title").textContent = out.truncated
    ? `${what} (of ${out.requested_length} asked for: the catalog holds no more under these rules)` : what;
  $("#playlist-download").hidden = kind === "alchemy";
  fillList($("#playlist-list"), out.items, { scored: true });
  $("#playlist-result").hidden = false;
}

function addAlchemy(side, t) {
  const other = side === "add" ? "subtract" : "add";
  state.alchemy[other] = state.alchemy[other].filter((x) => x.id !== t.id);
  if (!state.alchemy[side].some((x) => x.id === t.id)) state.alchemy[side].push({ id: t.id, title: t.title });
  renderAlchemy(); flash(`Alchemy: ${side === "add" ? "towards" : "away from"} “${t.title}”`);
}
function renderAlchemy() {
  for (const side of ["add", "subtract"]) {
    $(`#alchemy-${side}`).replaceChildren(...state.alchemy[side].map((x) => h("span", { class: "chip", "data-id": x.id },
      x.title, h("button", { type: "button", "aria-label": `remove ${x.title}`, onclick: () => {
        state.alchemy[side] = state.alchemy[side].filter((y) => y.id !== x.id); renderAlchemy();
      } }, "×"))));
  }
}
async function buildAlchemy() {
  if (!state.alchemy.add.length) { showError("playlist", "Add at least one track to move towards (the + buttons)."); return; }
  const body = { add: state.alchemy.add.map((x) => x.id), subtract: state.alchemy.subtract.map((x) => x.id),
    count: Number($("#alchemy-count").value) };
  const out = await busy("playlist", () => api("/v1/alchemy", { method: "POST", json: body }));
  if (out) showList("alchemy", body, out);
}

async function buildPlaylist() {
  if (!state.seeds.length) { showError("playlist", "Add at least one seed track first (the + Seed buttons)."); return; }
  const genres = [...$("#pl-genres").selectedOptions].map((o) => o.value);
  const body = { seeds: state.seeds.map((s) => s.id), length: Number($("#pl-length").value),
    artist_cap: Number($("#pl-cap").value) };
  if (genres.length) body.genres = genres;
  if ($("#pl-flow").checked) body.order = "flow";
  const out = await busy("playlist", () => api("/v1/playlists", { method: "POST", json: body }));
  if (out) showList("playlists", body, out);
}

async function buildPath() {
  if (!state.from || !state.to) { showError("playlist", "Choose the track to start from and the one to end at (the From and To buttons)."); return; }
  const body = { from: state.from.id, to: state.to.id, length: Number($("#path-length").value) };
  if ($("#path-flow").checked) body.order = "flow";
  const out = await busy("playlist", () => api("/v1/paths", { method: "POST", json: body }));
  if (out) showList("paths", body, out);
}

function showError(prefix, text) {
  const err = $(`#${prefix}-error`);
  err.textContent = text; err.hidden = false;
}

// The same request again with Accept: audio/x-mpegurl, saved as a file.
async function downloadM3u8() {
  const last = state.lastList;
  if (!last) return;
  const resp = await busy("playlist", () => api(`/v1/${last.kind}?format=m3u8`, { method: "POST", json: last.body, accept: "audio/x-mpegurl" }));
  if (!resp) return;
  const blob = await resp.blob();
  const a = h("a", { href: URL.createObjectURL(blob), download: `sonicsort-${last.kind === "playlists" ? "playlist" : "path"}.m3u8` });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function setUpPlaylists() {
  $("#pick-form").addEventListener("submit", () => pick());
  $("#playlist-form").addEventListener("submit", buildPlaylist);
  $("#path-form").addEventListener("submit", buildPath);
  $("#playlist-download").addEventListener("click", downloadM3u8);
  $("#playlist-play").addEventListener("click", () => {
    const items = state.lastList ? state.lastList.items : [];
    if (items.length) playNow(items[0], items, 0);
  });
  $("#player").addEventListener("ended", playNext);
  $("#player").addEventListener("timeupdate", recordPlay);
  $("#player-next").addEventListener("click", playNext);
  $("#player-continue").addEventListener("click", continueQueue);
  $("#alchemy-form").addEventListener("submit", buildAlchemy);
  $("#alchemy-clear").addEventListener("click", () => { state.alchemy = { add: [], subtract: [] }; renderAlchemy(); });
  const listener = $("#listener");
  try { state.listener = localStorage.getItem("sonicsort-listener") || ""; } catch (e) { /* private mode */ }
  listener.value = state.listener;
  listener.addEventListener("change", () => {
    state.listener = listener.value.trim();
    try { localStorage.setItem("sonicsort-listener", state.listener); } catch (e) { /* private mode */ }
  });
  renderSeeds(); renderEnds(); renderAlchemy();
}

// ------------------------------------------------------------------ map
async function loadMap() {
  const out = await busy("map", () => api("/v1/map?limit=20000"));
  if (!out) return;
  const m = state.map = { ...out, hidden: new Set(), view: null, hover: null, picked: null, links: [] };
  const pts = out.points;
  $("#map").dataset.points = String(pts.length);
  const ev = out.explained_variance.map((v) => `${(100 * v).toFixed(0)}%`).join(" + ");
  $("#map-caption").textContent = `${pts.length} of ${out.total} tracks, placed by their embeddings (PCA to 2-D, ${ev} of the variance). Hover for the title; click to play and see its neighbours.`;
  const counts = {};
  for (const p of pts) counts[p.genre] = (counts[p.genre] || 0) + 1;
  $("#map-legend").replaceChildren(...Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([g, n]) =>
    h("li", {}, h("label", {}, h("input", { type: "checkbox", checked: true, onchange: (e) => {
      if (e.target.checked) m.hidden.delete(g); else m.hidden.add(g);
      drawMap();
    } }), h("span", { class: "swatch", style: `--c:${colourOf(g)}` }), ` ${g} `, h("span", { class: "muted small" }, n)))));
  drawMap();
}

function mapGeometry() {
  const canvas = $("#map");
  const rect = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(200, rect.width), hgt = Math.max(200, rect.height);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(hgt * dpr);
  }
  const pad = 14, s = Math.min(w, hgt) / 2 - pad;
  return { canvas, dpr, w, hgt, toPx: (p) => [w / 2 + p.x * s, hgt / 2 - p.y * s] };
}

function drawMap() {
  const m = state.map;
  if (!m) return;
  const { canvas, dpr, w, hgt, toPx } = mapGeometry();
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);
  const r = m.points.length > 5000 ? 2 : 3.5;
  for (const p of m.points) {
    if (m.hidden.has(p.genre)) continue;
    const [x, y] = toPx(p);
    ctx.fillStyle = colourOf(p.genre);
    ctx.globalAlpha = m.picked ? 0.45 : 0.85;
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.globalAlpha = 1;
  if (m.picked) {
    const [px, py] = toPx(m.picked);
    ctx.strokeStyle = "rgba(0,0,0,.55)"; ctx.lineWidth = 1;
    for (const n of m.links) {
      const [nx, ny] = toPx(n);
      ctx.beginPath(); ctx.moveTo(px, py); ctx.lineTo(nx, ny); ctx.stroke();
      ctx.fillStyle = colourOf(n.genre); ctx.beginPath(); ctx.arc(nx, ny, r + 2, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    }
    ctx.fillStyle = colourOf(m.picked.genre); ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(px, py, r + 4, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
  }
  if (m.hover) {
    const [hx, hy] = toPx(m.hover);
    ctx.strokeStyle = "#111"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(hx, hy, r + 3, 0, 2 * Math.PI); ctx.stroke();
  }
}

function nearestPoint(ev) {
  const m = state.map;
  if (!m) return null;
  const { canvas, toPx } = mapGeometry();
  const rect = canvas.getBoundingClientRect();
  const x = ev.clientX - rect.left, y = ev.clientY - rect.top;
  let best = null, bestD = 12 * 12;
  for (const p of m.points) {
    if (m.hidden.has(p.genre)) continue;
    const [px, py] = toPx(p);
    const d = (px - x) ** 2 + (py - y) ** 2;
    if (d < bestD) { bestD = d; best = p; }
  }
  return best;
}

async function pickOnMap(p) {
  const m = state.map;
  m.picked = p; m.links = [];
  const byId = new Map(m.points.map((q) => [q.id, q]));
  $("#map-pick").hidden = false;
  $("#map-pick-title").textContent = p.title;
  $("#map-pick-meta").replaceChildren(p.artist || "unknown artist", " ", chip(p.genre));
  $("#map-pick-open").href = `#/track/${p.id}`;
  playNow({ id: p.id, title: p.title, artist: p.artist, audio_url: `/v1/tracks/${p.id}/audio` });
  drawMap();
  const out = await busy("map", () => api(`/v1/tracks/${p.id}/similar?k=8`));
  if (!out || m.picked !== p) return;
  m.links = out.items.map((t) => byId.get(t.id)).filter(Boolean);
  fillList($("#map-neighbours"), out.items, { scored: true, compact: true });
  drawMap();
}

// Where point i of the map is drawn, in CSS pixels from the canvas's corner (for tests and screenshots).
window.sonicsortMapPoint = (i) => mapGeometry().toPx(state.map.points[i]);

function setUpMap() {
  const canvas = $("#map"), tip = $("#map-tip");
  canvas.addEventListener("mousemove", (ev) => {
    const p = nearestPoint(ev);
    if (p !== (state.map && state.map.hover)) { state.map.hover = p; drawMap(); }
    if (!p) { tip.hidden = true; canvas.style.cursor = ""; return; }
    canvas.style.cursor = "pointer";
    tip.replaceChildren(h("b", {}, p.title), h("br"), `${p.artist || "unknown artist"} · ${p.genre}`);
    const box = canvas.getBoundingClientRect();
    tip.style.left = `${Math.min(ev.clientX - box.left + 12, box.width - 180)}px`;
    tip.style.top = `${ev.clientY - box.top + 12}px`;
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; if (state.map) { state.map.hover = null; drawMap(); } });
  canvas.addEventListener("click", (ev) => { const p = nearestPoint(ev); if (p) pickOnMap(p); });
  window.addEventListener("resize", drawMap);
}

// ------------------------------------------------------------------ readiness, genres, routing
async function waitReady() {
  const banner = $("#banner");
  for (;;) {
    let r = null;
    try { r = await fetch("/readyz").then((x) => x.json()); } catch (e) { r = null; }
    if (r && (r.status === "ready" || r.status === "degraded")) {
      banner.hidden = true;
      if (r.status === "degraded") flash("Redis is not answering: predictions are not cached");
      return;
    }
    banner.hidden = false;
    banner.className = "banner" + (r && r.status === "failed" ? " bad" : "");
    banner.textContent = !r ? "The server cannot be reached; retrying…"
      : r.status === "failed" ? `The service could not start: ${r.error}`
      : "The service is starting (loading the model and the index)…";
    await new Promise((res) => setTimeout(res, 1500));
  }
}

async function loadGenres() {
  const out = await api("/v1/genres").catch(() => null);
  if (!out) return;
  for (const g of out.genres) colourOf(g.genre);
  const opts = (withCounts) => out.genres.map((g) => h("option", { value: g.genre }, withCounts ? `${g.genre} (${g.tracks})` : g.genre));
  $("#search-genre").replaceChildren(h("option", { value: "" }, "all genres"), ...opts(true));
  $("#sim-genre").replaceChildren(h("option", { value: "" }, "any"), ...opts(false));
  $("#pl-genres").replaceChildren(...opts(false));
}

async function loadSaved() {
  $("#connect-url").textContent = location.origin;
  const out = await api("/v1/saved-playlists").catch(() => null);
  if (!out) return;
  $("#saved-empty").hidden = out.items.length > 0;
  $("#saved-list").replaceChildren(...out.items.map((p) => h("li", {},
    h("a", { href: `${p.url}?format=m3u8`, download: `${p.name}.m3u8` }, p.name),
    h("span", { class: "muted small" }, ` ${p.owner} · ${p.n_tracks} tracks`))));
}

async function loadDuplicates() {
  const out = await busy("duplicates", () => api("/v1/duplicates?limit=200"));
  if (!out) return;
  $("#duplicates-empty").hidden = out.groups.length > 0;
  $("#duplicates-groups").replaceChildren(...out.groups.map((g) => {
    const ol = h("ol", { class: "tracks compact" });
    fillList(ol, g.tracks, { compact: true });
    return h("div", { class: "dup-group", "data-ids": g.ids.join(",") },
      h("h3", { class: "small-head" }, `${g.tracks.length} files of one recording`), ol);
  }));
  $("#duplicates-groups").dataset.count = String(out.groups.length);
}

const VIEWS = ["identify", "browse", "track", "playlist", "map", "duplicates"];
function route() {
  const [, view = "identify", arg] = location.hash.split("/");
  const name = VIEWS.includes(view) ? view : "identify";
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== name;
  for (const a of document.querySelectorAll("nav a")) {
    const on = a.dataset.view === name || (name === "track" && a.dataset.view === "browse");
    a.classList.toggle("active", on);
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.body.dataset.view = name;
  if (name === "browse" && !$("#browse-list").dataset.count) search();
  if (name === "track" && arg) showTrack(Number(arg));
  if (name === "playlist" && !$("#pick-list").dataset.count) pick();
  if (name === "playlist") loadSaved();
  if (name === "map") { if (!state.map) loadMap(); else drawMap(); }
  if (name === "duplicates") loadDuplicates();
}

async function main() {
  loadLocal();
  for (const f of document.forms) f.addEventListener("submit", (e) => e.preventDefault());
  setUpIdentify(); setUpBrowse(); setUpPlaylists(); setUpMap();
  await waitReady();
  await loadGenres();
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.ready = "1";
}

main();
