// emolens web page: upload a photo/video/audio file or stream the webcam; everything drawn on canvas.
// Plain JS, no build step, no external files. State for tests and curious users: window.emolens.
"use strict";

const COLORS = {  // RGB of emolens.outputs.COLORS (which is BGR), so a label has one colour everywhere
  angry: "#dc2828", disgust: "#288c28", fear: "#a03ca0", happy: "#ffc800", sad: "#2878c8", surprise: "#00c8e6",
  neutral: "#aaaaaa", contempt: "#8c643c", calm: "#78c8c8",
};
const color = (label) => COLORS[label] || "#ffffff";
const $ = (id) => document.getElementById(id);
const state = window.emolens = { last: null, job: null, live: { results: 0, faces: 0, dropped: 0, fps: 0, errors: 0 } };

// ------------------------------------------------------------------------------------ helpers
function setStatus(text, error = false, el = $("status")) {
  el.textContent = text;
  el.classList.toggle("error", error);
}

async function apiError(resp) {
  try {
    const body = await resp.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (e) {
    return `${resp.status} ${resp.statusText}`;
  }
}

// A server started with --token answers 401 without it: the page asks once, keeps it in
// localStorage and sends it as X-Emolens-Token (the live WebSocket: ?token=).
const TOKEN_KEY = "emolens.token";
let tokenPrompt = null;
const storedToken = () => { try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; } };

function withToken(opts = {}) {
  const token = storedToken();
  return token ? { ...opts, headers: { ...(opts.headers || {}), "X-Emolens-Token": token } } : opts;
}

function askToken() {
  if (!tokenPrompt) {
    tokenPrompt = Promise.resolve().then(() => {
      const token = (window.prompt("This emolens server needs its access token:") || "").trim();
      if (token) localStorage.setItem(TOKEN_KEY, token);
      return token;
    });
  }
  return tokenPrompt;
}

async function api(url, opts = {}) {
  let resp = await fetch(url, withToken(opts));
  if (resp.status === 401) {
    if (await askToken()) resp = await fetch(url, withToken(opts));
    if (resp.status === 401) {  // still refused: forget the token so that the next try asks again
      localStorage.removeItem(TOKEN_KEY);
      tokenPrompt = null;
    }
  }
  return resp;
}

// A URL an <a>/<video> can load: the API URL itself, or (with a token) a blob fetched with it.
async function loadableUrl(url) {
  if (!storedToken()) return url;
  const resp = await api(url);
  return resp.ok ? URL.createObjectURL(await resp.blob()) : url;
}

function sortedProbs(probs) {
  return Object.entries(probs || {}).sort((a, b) => b[1] - a[1]);
}

function barsElement(probs) {
  const box = document.createElement("div");
  box.className = "bars";
  for (const [name, p] of sortedProbs(probs)) {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.label = name;
    row.innerHTML = `<span>${name}</span><span class="bar-track"><span class="bar-fill"></span></span>` +
      `<span class="bar-value">${(100 * p).toFixed(1)}%</span>`;
    const fill = row.querySelector(".bar-fill");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    fill.style.background = color(name);
    box.appendChild(row);
  }
  return box;
}

function labelChip(el, label) {
  el.textContent = label || "none";
  el.style.background = label ? color(label) : "#ddd";
  el.dataset.label = label || "";
}

// Black or white text, whichever reads better on a backing colour "#rrggbb".
function textOn(hex) {
  const n = parseInt(hex.slice(1), 16);
  return 0.299 * (n >> 16) + 0.587 * ((n >> 8) & 255) + 0.114 * (n & 255) > 140 ? "#000" : "#fff";
}

const overlap = (a, b) => Math.max(0, Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0])) *
  Math.max(0, Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]));
const clampRect = (r, W, H) => [Math.min(Math.max(0, r[0]), Math.max(0, W - r[2])),
  Math.min(Math.max(0, r[1]), Math.max(0, H - r[3])), r[2], r[3]];

// Where each face's label tag and probability bars go ([x, y, w, h] in canvas pixels), greedily:
// every tag inside the canvas, above / below / inside its box, whichever covers the least of the
// other faces and the tags already placed; bars only where they cover nothing (else left out).
function layoutFaces(ctx, faces, scale, opts = {}) {
  const W = ctx.canvas.width, H = ctx.canvas.height;
  const boxes = faces.map((f) => f.box.map((v) => v * scale));
  const taken = [];
  const cost = (r, own) => boxes.reduce((s, b, i) => s + (i === own ? 0 : overlap(r, b)), 0) +
    taken.reduce((s, t) => s + overlap(r, t), 0);
  const th = parseInt(ctx.font, 10) + 6;
  const out = faces.map((f, i) => {
    const [x, y, w, h] = boxes[i];
    const p = f.probs[f.label] || 0;
    const text = `${opts.numbered ? `#${i + 1} ` : ""}${f.label} ${(100 * p).toFixed(0)}%`;
    const tw = Math.min(W, ctx.measureText(text).width + 8);
    const cands = [[x, y - th], [x, y + h], [x, y], [x, y + h - th]]
      .map(([cx, cy]) => clampRect([cx, cy, tw, th], W, H));
    let tag = cands[0], best = Infinity;
    for (const r of cands) {
      const c = cost(r, i);
      if (c < best) { best = c; tag = r; }
    }
    taken.push(tag);
    return { box: boxes[i], tag, text, bars: null };
  });
  if (opts.bars === false) return out;
  faces.forEach((f, i) => {  // bars last: they are optional, the tags are not
    const [x, y, w, h] = boxes[i], tag = out[i].tag, gap = 4;
    const n = Object.keys(f.probs || {}).length;
    if (!n) return;
    const bw = Math.max(40, Math.min(110, w * 0.6)), rh = Math.max(6, Math.min(12, h / 10));
    const bh = n * (rh + 2);
    const cands = [[x + w + gap, y], [Math.max(x + w, tag[0] + tag[2]) + gap, y], [x - gap - bw, y],
      [x, Math.max(y + h, tag[1] + tag[3]) + gap], [x, Math.min(y, tag[1]) - gap - bh]];
    for (const [cx, cy] of cands) {
      const r = [cx, cy, bw, bh];
      if (cx >= 0 && cy >= 0 && cx + bw <= W && cy + bh <= H && cost(r, i) === 0) {
        out[i].bars = r;
        out[i].rowHeight = rh;
        taken.push(r);
        return;
      }
    }
  });
  return out;
}

// Draw faces (API boxes are in `size` pixels of the analysed image) onto ctx scaled by `scale`.
function drawFaces(ctx, faces, scale, opts = {}) {
  const lw = Math.max(2, Math.round(ctx.canvas.width / 300));
  ctx.font = `${Math.max(12, Math.round(ctx.canvas.width / 45))}px system-ui, sans-serif`;
  const places = layoutFaces(ctx, faces, scale, opts);
  faces.forEach((f, i) => {  // boxes first, so that no box line crosses a label
    const [x, y, w, h] = places[i].box;
    ctx.lineWidth = lw;
    ctx.strokeStyle = color(f.label);
    ctx.strokeRect(x, y, w, h);
  });
  faces.forEach((f, i) => {
    const { tag, text, bars } = places[i], c = color(f.label);
    ctx.fillStyle = c;
    ctx.fillRect(...tag);
    ctx.fillStyle = textOn(c);
    ctx.fillText(text, tag[0] + 4, tag[1] + tag[3] - 6, tag[2] - 8);
    if (!bars) return;
    const rh = places[i].rowHeight;
    sortedProbs(f.probs).forEach(([name, q], k) => {
      const by = bars[1] + k * (rh + 2);
      ctx.fillStyle = "rgba(30,30,30,.75)";
      ctx.fillRect(bars[0], by, bars[2], rh);
      ctx.fillStyle = color(name);
      ctx.fillRect(bars[0], by, bars[2] * q, rh);
    });
  });
  return places;
}

// ------------------------------------------------------------------------------------ tabs, drop
document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
  $("panel-file").hidden = tab.dataset.tab !== "file";
  $("panel-live").hidden = tab.dataset.tab !== "live";
  if (tab.dataset.tab !== "live") stopLive();
}));

const drop = $("drop");
["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => {
  e.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, () => drop.classList.remove("over")));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer && e.dataTransfer.files.length) handleFile(e.dataTransfer.files[0]);
});
$("file-input").addEventListener("change", (e) => {
  if (e.target.files.length) handleFile(e.target.files[0]);
  e.target.value = "";
});

const VIDEO_EXT = /\.(mp4|m4v|mov|avi|mkv|webm|flv|mpe?g|ts|mts|m2ts|wmv|3gp|ogv)$/i;
const AUDIO_EXT = /\.(wav|flac|mp3|ogg|opus|m4a|aac|wma|aiff?)$/i;

function kindOf(file) {
  const major = (file.type || "").split("/")[0];
  if (["image", "video", "audio"].includes(major)) return major;
  if (VIDEO_EXT.test(file.name)) return "video";
  if (AUDIO_EXT.test(file.name)) return "audio";
  return "image";  // let the server judge the content
}

function showResult(kind, stateName) {
  const r = $("result");
  r.dataset.kind = kind;
  r.dataset.state = stateName;
  const error = stateName === "error";
  $("error-result").hidden = !error;
  $("photo-result").hidden = error || kind !== "image";
  $("audio-result").hidden = error || kind !== "audio";
  $("video-result").hidden = error || kind !== "video";
}

// Clear the video progress row ("uploading…", the bar, the delete button) and any old video result.
function resetProgress() {
  $("video-progress").value = 0;
  $("video-progress-text").textContent = "";
  $("job-delete").hidden = true;
  $("video-done").hidden = true;
}

// An error takes the place of the result: no progress bar, no empty result box left on screen.
function showError(kind, name, message) {
  stopPolling();
  resetProgress();
  $("error-file").textContent = name || "the file";
  $("error-message").textContent = message;
  showResult(kind, "error");
  setStatus(message, true);
}

async function handleFile(file) {
  const kind = kindOf(file);
  stopPolling();
  resetProgress();
  showResult(kind, "busy");
  setStatus(`Analysing ${file.name} (${(file.size / 1e6).toFixed(2)} MB)…`);
  try {
    if (kind === "image") await analysePhoto(file);
    else if (kind === "audio") await analyseAudio(file);
    else await startVideo(file);
  } catch (err) {
    showError(kind, file.name, String(err.message || err));
  }
}

// One click: analyse the sample photo shipped with the page, as if the user had chosen it.
$("try-sample").addEventListener("click", async () => {
  const resp = await api("/static/sample.jpg");
  if (!resp.ok) return showError("image", "the sample photo", `${resp.status}: ${await apiError(resp)}`);
  handleFile(new File([await resp.blob()], "astronaut.jpg", { type: "image/jpeg" }));
});

async function upload(url, file, fields = {}) {
  const form = new FormData();
  form.append("file", file, file.name);
  for (const [k, v] of Object.entries(fields)) if (v !== "" && v != null) form.append(k, v);
  const resp = await api(url, { method: "POST", body: form });
  if (!resp.ok) throw new Error(`${resp.status}: ${await apiError(resp)}`);
  return resp.json();
}

// ------------------------------------------------------------------------------------ photo
// The photo on screen: its file, decoded bitmap, /api/image result and, once asked, /api/explain result.
let photo = null;

async function analysePhoto(file) {
  const [result, bitmap] = await Promise.all([upload("/api/image", file), createImageBitmap(file).catch(() => null)]);
  state.last = result;
  state.explain = null;
  photo = { file, bitmap, result, explained: null, overlays: [] };  // overlays: per face, {method: image}
  $("explain-toggle").checked = false;
  setExplainView("off");
  renderPhoto();
  const list = $("faces");
  list.innerHTML = "";
  result.faces.forEach((f, i) => {
    const card = document.createElement("div");
    card.className = "face-card";
    card.dataset.label = f.label;
    card.innerHTML = `<h4>Face ${i + 1}: <span class="label"></span> <small class="muted">detector ` +
      `${(f.score * 100).toFixed(0)}%</small></h4>`;
    labelChip(card.querySelector(".label"), f.label);
    card.appendChild(barsElement(f.probs));
    const why = document.createElement("div");
    why.className = "explain";
    why.hidden = true;
    card.appendChild(why);
    list.appendChild(card);
  });
  if (!result.faces.length) list.innerHTML = "<p class='muted'>No face found in this photo.</p>";
  showResult("image", "done");
  setStatus(`${file.name}: ${result.faces.length} face(s) in ${result.time_ms} ms`);
}

// Draw the photo, the heat maps when Explain is on, then boxes, tags and bars (laid out as always).
function renderPhoto() {
  if (!photo) return;
  const canvas = $("photo-canvas");
  const [w, h] = photo.result.size;
  const scale = Math.min(1, 900 / w);
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  const ctx = canvas.getContext("2d");
  if (photo.bitmap) ctx.drawImage(photo.bitmap, 0, 0, canvas.width, canvas.height);
  else { ctx.fillStyle = "#333"; ctx.fillRect(0, 0, canvas.width, canvas.height); }
  const on = $("explain-toggle").checked && photo.explained;
  let drawn = 0;
  if (on) {
    const method = shownMethod();
    photo.explained.faces.forEach((f, i) => {
      const img = photo.overlays[i][method], [x, y, bw, bh] = f.image_box;
      if (!img || !bw || !bh) return;
      ctx.drawImage(img, x * scale, y * scale, bw * scale, bh * scale);
      drawn += 1;
    });
  }
  canvas.dataset.overlays = String(drawn);
  canvas.dataset.method = on ? shownMethod() : "";
  const faces = on ? photo.explained.faces : photo.result.faces;
  state.layout = drawFaces(ctx, faces, scale, { numbered: faces.length > 1 });
}

// The heat-map methods this server's model offers (health: explain_methods; "both" fetches all at once).
const explainMethods = () => ((state.health && state.health.explain_methods) || ["occlusion"]).filter((m) => m !== "both");
const shownMethod = () => (explainMethods().length > 1 ? $("explain-method").value : explainMethods()[0]);
const METHOD_TEXT = {
  occlusion: "where covering the face with a grey patch lowered its label's probability",
  gradcam: "Grad-CAM: where conv stage 2's features raised its label's score",
};

function setExplainView(mode) {
  $("photo-result").dataset.explain = mode;
  $("explain-legend").hidden = mode !== "on";
  $("explain-method").hidden = mode !== "on" || explainMethods().length < 2;
  $("explain-what").textContent = METHOD_TEXT[shownMethod()] || shownMethod();
  $("explain-toggle").disabled = mode === "busy";
  if (mode !== "error") $("explain-error").hidden = true;
  const on = mode === "on";
  document.querySelectorAll("#faces .explain").forEach((el) => { el.hidden = !on; });
}

const loadPng = (b64) => {
  const img = new Image();
  img.src = `data:image/png;base64,${b64}`;
  return img.decode().then(() => img);
};

// Per face card: the aligned face beside its heat map, and one bar per region: the change of the
// predicted class's probability when that region is masked (left, in the label's colour: the region
// supported the label; right, grey: it argued against it).
function fillExplanation(card, f) {
  const why = card.querySelector(".explain");
  why.innerHTML = "";
  const pic = document.createElement("img");
  pic.className = "face-heat";
  pic.alt = `the aligned face and its heat maps: ${f.methods.join(", ")}`;
  pic.src = `data:image/png;base64,${f.png}`;
  const box = document.createElement("div");
  box.className = "regions";
  box.dataset.label = f.label;
  box.innerHTML = `<div class="regions-title">masking changes P(<span class="label"></span>)</div>`;
  labelChip(box.querySelector(".label"), f.label);
  const deltas = Object.entries(f.regions).map(([name, d]) => [name, d[f.label] || 0]);
  const top = Math.max(0.05, ...deltas.map(([, d]) => Math.abs(d)));
  for (const [name, d] of deltas) {
    const row = document.createElement("div");
    row.className = "region";
    row.dataset.region = name;
    row.dataset.delta = String(d);
    row.title = d < 0 ? `the ${name} supported ${f.label}` : `the ${name} argued against ${f.label}`;
    row.innerHTML = `<span>${name}</span><span class="region-track"><span class="region-fill"></span></span>` +
      `<span class="bar-value">${d > 0 ? "+" : d < 0 ? "\u2212" : ""}${Math.abs(100 * d).toFixed(1)} pts</span>`;
    const fill = row.querySelector(".region-fill"), width = `${(50 * Math.abs(d) / top).toFixed(1)}%`;
    Object.assign(fill.style, d < 0 ? { right: "50%", width, background: color(f.label) } :
      { left: "50%", width, background: "#98a2b3" });
    box.appendChild(row);
  }
  why.append(pic, box);
  if (f.activations_png) {  // the conv-stage activation grid, folded away
    const acts = document.createElement("details");
    acts.className = "activations";
    acts.innerHTML = `<summary>layer activations (${f.activations.length} conv stages)</summary>`;
    const grid = document.createElement("img");
    grid.alt = "mean and most active channels of each conv stage";
    grid.src = `data:image/png;base64,${f.activations_png}`;
    acts.appendChild(grid);
    why.appendChild(acts);
  }
}

async function explainPhoto() {
  const current = photo;
  if (!current.explained) {
    setExplainView("busy");
    setStatus(`Explaining ${current.file.name}…`);
    const method = explainMethods().length > 1 ? "both" : explainMethods()[0];
    const result = await upload("/api/explain", current.file, { image: "false", method });
    const overlays = await Promise.all(result.faces.map(async (f) => Object.fromEntries(await Promise.all(
      Object.entries(f.overlays).map(async ([m, b64]) => [m, b64 ? await loadPng(b64) : null])))));
    if (photo !== current) return;  // another photo was chosen meanwhile
    Object.assign(current, { explained: result, overlays });
    const cards = document.querySelectorAll("#faces .face-card");
    result.faces.forEach((f, i) => { if (cards[i]) fillExplanation(cards[i], f); });
    setStatus(`${current.file.name}: explained ${result.faces.length} face(s) in ${result.time_ms} ms`);
  }
  state.explain = current.explained;
  if (!$("explain-toggle").checked) return setExplainView("off");
  setExplainView("on");
  renderPhoto();
}

$("explain-method").addEventListener("change", () => {
  if (!photo || $("photo-result").dataset.explain !== "on") return;
  setExplainView("on");
  renderPhoto();
});

$("explain-toggle").addEventListener("change", async (e) => {
  if (!photo) return;
  if (!e.target.checked) {
    setExplainView("off");
    renderPhoto();
    return;
  }
  const current = photo;
  try {
    await explainPhoto();
  } catch (err) {  // shown like any error, but the photo's result stays on screen
    if (photo !== current) return;
    const message = `could not explain ${current.file.name}: ${String(err.message || err)}`;
    $("explain-toggle").checked = false;
    setExplainView("error");
    $("explain-error").textContent = message;
    $("explain-error").hidden = false;
    setStatus(message, true);
    renderPhoto();
  }
});

// ------------------------------------------------------------------------------------ audio
async function analyseAudio(file) {
  const result = await upload("/api/audio", file);
  state.last = result;
  labelChip($("audio-label"), result.label);
  const bars = $("audio-bars");
  bars.replaceWith(Object.assign(barsElement(result.probs), { id: "audio-bars" }));
  drawSegments($("audio-chart"), result.segments || [], result.duration_s || 0);
  showResult("audio", "done");
  const n = (result.segments || []).length;
  setStatus(`${file.name}: ${result.label || "no speech found"} (${n} segment(s), ${result.duration_s} s)`);
}

function drawSegments(canvas, segments, duration) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 30;
  ctx.clearRect(0, 0, W, H);
  const end = Math.max(duration, ...segments.map((s) => s.end_s), 0.1);
  const xs = (t) => pad + (t / end) * (W - 2 * pad);
  ctx.fillStyle = "#eceff4";
  ctx.fillRect(pad, 15, W - 2 * pad, 40);
  ctx.font = "12px system-ui, sans-serif";
  for (const s of segments) {
    ctx.fillStyle = color(s.label);
    ctx.fillRect(xs(s.start_s), 15, Math.max(1, xs(s.end_s) - xs(s.start_s)), 40);
    ctx.fillStyle = "#000";
    ctx.fillText(s.label, xs(s.start_s) + 3, 38);
  }
  timeAxis(ctx, xs, end, 70);
}

function timeAxis(ctx, xs, end, y) {
  ctx.fillStyle = "#555";
  ctx.font = "11px system-ui, sans-serif";
  const step = [0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600].find((s) => end / s <= 10) || 1200;
  for (let t = 0; t <= end + 1e-9; t += step) {
    ctx.fillRect(xs(t), y - 6, 1, 5);
    ctx.fillText(`${+t.toFixed(1)}s`, xs(t) - 8, y + 8);
  }
}

// ------------------------------------------------------------------------------------ video
let pollTimer = null;
function stopPolling() {
  if (pollTimer) clearTimeout(pollTimer);
  pollTimer = null;
}

async function startVideo(file) {
  $("video-done").hidden = true;
  $("video-progress").removeAttribute("value");
  $("video-progress-text").textContent = "uploading…";
  const job = await upload("/api/jobs", file, { every: $("opt-every").value, max_frames: $("opt-max-frames").value });
  state.job = job;
  $("job-delete").hidden = false;
  setStatus(`${file.name}: video job ${job.id} queued`);
  poll(job.id);
}

async function poll(id) {
  const resp = await api(`/api/jobs/${id}`);
  if (!resp.ok) return showError("video", state.job && state.job.filename, `${resp.status}: ${await apiError(resp)}`);
  const job = state.job = await resp.json();
  const p = job.progress;
  if (p.fraction != null) $("video-progress").value = p.fraction;
  $("video-progress-text").textContent =
    `${job.status}: ${p.frames_done}${p.frames_total ? ` / ${p.frames_total}` : ""} frames`;
  if (job.status === "done") return showVideo(job);
  if (job.status === "failed") return showError("video", job.filename, `video job failed: ${job.error}`);
  pollTimer = setTimeout(() => poll(id), 500);
}

async function showVideo(job) {
  const [summary, timeline] = await Promise.all(
    [`/api/jobs/${job.id}/result`, `/api/jobs/${job.id}/timeline`].map((u) => api(u).then((r) => r.json())));
  state.last = { summary, timeline };
  // the fused face+voice decision (equal to the face decision when there is no speech)
  const decision = summary.label_fused || summary.label_sum;
  labelChip($("video-decision"), decision);
  const voice = summary.label_voice ? `; face: ${summary.label_face || "-"}, voice: ${summary.label_voice}, ` +
    `fused: ${summary.label_fused || "-"}` : "";
  $("video-decision-detail").textContent = `face sum rule: ${summary.label_sum || "-"}, vote rule: ` +
    `${summary.label_vote || "-"}${voice}; ${summary.tracks.length} person(s), ${summary.frames_analysed} frames, ` +
    `${summary.duration_s} s${summary.message ? ` (${summary.message})` : ""}`;
  drawTimeline($("timeline-chart"), timeline, summary);
  const links = $("downloads");
  links.innerHTML = "";
  for (const [name, url] of Object.entries(summary.outputs || {})) {
    const a = document.createElement("a");
    a.href = await loadableUrl(url);
    a.textContent = `download ${name}`;
    a.setAttribute("download", "");
    links.appendChild(a);
  }
  const video = $("annotated");
  if (summary.outputs && summary.outputs["annotated.mp4"]) video.src = await loadableUrl(summary.outputs["annotated.mp4"]);
  $("video-done").hidden = false;
  showResult("video", "done");
  setStatus(`video done: ${summary.tracks.length} person(s), decision ${decision || "none"}`);
}

// One panel per track: a probability line per emotion over time, and a strip of the frame labels.
function drawTimeline(canvas, timeline, summary) {
  const tracks = timeline.tracks || [];
  const panel = 110, top = 8, left = 70, right = 12;
  canvas.height = Math.max(60, tracks.length * panel + 30);
  const W = canvas.width, ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, W, canvas.height);
  const end = Math.max(summary.duration_s || 0, ...tracks.map((t) => t.time_s[t.time_s.length - 1] || 0), 0.1);
  const xs = (t) => left + (t / end) * (W - left - right);
  ctx.font = "12px system-ui, sans-serif";
  if (!tracks.length) { ctx.fillStyle = "#666"; ctx.fillText("no face found", left, 30); }
  tracks.forEach((tr, k) => {
    const y0 = top + k * panel, h = panel - 30;
    ctx.fillStyle = "#f3f5f8";
    ctx.fillRect(left, y0, W - left - right, h);
    const info = (summary.tracks || []).find((t) => t.track_id === tr.track_id) || {};
    ctx.fillStyle = "#222";
    ctx.fillText(`person ${tr.track_id}`, 4, y0 + 14);
    ctx.fillStyle = color(info.label_sum);
    ctx.fillText(info.label_sum || "", 4, y0 + 30);
    for (const name of timeline.labels) {
      const ys = tr.probs[name];
      ctx.strokeStyle = color(name);
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      tr.time_s.forEach((t, i) => {
        const py = y0 + h - ys[i] * h;
        if (i) ctx.lineTo(xs(t), py); else ctx.moveTo(xs(t), py);
      });
      ctx.stroke();
    }
    tr.time_s.forEach((t, i) => {  // label strip under the panel
      const next = i + 1 < tr.time_s.length ? tr.time_s[i + 1] : t + 1 / 30;
      ctx.fillStyle = color(tr.label[i]);
      ctx.fillRect(xs(t), y0 + h + 2, Math.max(1, xs(next) - xs(t)), 6);
    });
  });
  timeAxis(ctx, xs, end, canvas.height - 12);
  $("timeline-legend").innerHTML = timeline.labels.map((n) => `<span style="--c:${color(n)}">${n}</span>`).join("");
}

$("job-delete").addEventListener("click", async () => {
  if (!state.job) return;
  stopPolling();
  const resp = await api(`/api/jobs/${state.job.id}`, { method: "DELETE" });
  setStatus(resp.ok ? `job ${state.job.id} deleted` : await apiError(resp), !resp.ok);
  $("job-delete").hidden = true;
  $("video-done").hidden = true;
  state.job = null;
});

// ------------------------------------------------------------------------------------ live webcam
let live = null;

async function startLive() {
  if (live) return;
  const status = $("live-status");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    return setStatus(`cannot open the camera: ${err.message || err}`, true, status);
  }
  const video = $("live-video");
  video.srcObject = stream;
  await video.play();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  await api("/api/health").catch(() => null);  // asks for the token first when the server needs one
  const token = storedToken();
  const ws = new WebSocket(`${proto}://${location.host}/api/live${token ? `?token=${encodeURIComponent(token)}` : ""}`);
  ws.binaryType = "arraybuffer";
  live = { stream, ws, video, inflight: 0, frameId: 0, sentId: 0, faces: [], size: [1, 1], times: [], grab: document.createElement("canvas") };
  Object.assign(state.live, { results: 0, faces: 0, dropped: 0, fps: 0, errors: 0, running: true });
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
  ws.onopen = () => { setStatus("live: analysing webcam frames", false, status); pump(); };
  ws.onclose = () => { if (live && live.ws === ws) { setStatus("connection closed", true, status); stopLive(); } };
  ws.onmessage = (ev) => {
    if (!live) return;
    const msg = JSON.parse(ev.data);
    if (msg.pong) return;
    live.inflight = Math.max(0, live.inflight - 1);
    if (msg.dropped === true) state.live.dropped += 1;
    else if (msg.error) { state.live.errors += 1; setStatus(msg.error, true, status); }
    else {
      live.faces = state.live.lastFaces = msg.faces;
      live.size = state.live.lastSize = msg.size;
      const now = performance.now();
      live.times.push(now);
      while (live.times.length && now - live.times[0] > 2000) live.times.shift();
      state.live.results += 1;
      if (msg.faces.length) state.live.faces += 1;
      state.live.fps = live.times.length > 1 ? 1000 * (live.times.length - 1) / (now - live.times[0]) : 0;
      state.live.ms = msg.ms;
      render();
    }
    pump();
  };
  requestAnimationFrame(loop);
}

// Keep at most two frames on their way: the server keeps only the newest and drops the rest.
function pump() {
  if (!live || live.ws.readyState !== WebSocket.OPEN) return;
  while (live.inflight < 2 && live.frameId !== live.sentId) {  // each camera frame is sent once
    const v = live.video;
    if (!v.videoWidth) return;
    live.sentId = live.frameId;
    const target = +$("live-size").value;
    const scale = Math.min(1, target / Math.max(v.videoWidth, v.videoHeight));
    const g = live.grab;
    g.width = Math.round(v.videoWidth * scale);
    g.height = Math.round(v.videoHeight * scale);
    g.getContext("2d").drawImage(v, 0, 0, g.width, g.height);
    live.inflight += 1;
    const ws = live.ws;
    g.toBlob((blob) => { if (blob && ws.readyState === WebSocket.OPEN) ws.send(blob); }, "image/jpeg", 0.75);
  }
}

function render() {
  if (!live) return;
  const v = live.video, canvas = $("live-canvas");
  if (!v.videoWidth) return;
  if (canvas.width !== v.videoWidth || canvas.height !== v.videoHeight) {
    canvas.width = v.videoWidth;
    canvas.height = v.videoHeight;
  }
  const ctx = canvas.getContext("2d");
  ctx.drawImage(v, 0, 0);
  drawFaces(ctx, live.faces, v.videoWidth / live.size[0]);
  const s = state.live;
  const el = $("live-stats");
  el.textContent = `${s.fps.toFixed(1)} FPS, ${s.ms || 0} ms per frame, ${live.faces.length} face(s), ` +
    `${s.dropped} dropped`;
  Object.assign(el.dataset, { fps: s.fps.toFixed(2), results: s.results, faces: s.faces, dropped: s.dropped });
}

// Redraw on every new camera frame (requestVideoFrameCallback where the browser has it), with the
// newest boxes; results also redraw as they arrive.
function loop() {
  if (!live) return;
  live.frameId += 1;
  render();
  pump();
  const v = live.video;
  if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(loop);
  else requestAnimationFrame(loop);
}

function stopLive() {
  if (!live) return;
  const l = live;
  live = null;
  state.live.running = false;
  l.ws.close();
  l.stream.getTracks().forEach((t) => t.stop());
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

$("live-start").addEventListener("click", startLive);
$("live-stop").addEventListener("click", () => { stopLive(); setStatus("stopped", false, $("live-status")); });

api("/api/health").then((r) => r.json()).then((h) => {
  state.health = h;
  $("health").textContent = `v${h.version}` + (h.features.audio ? "" : " · audio unavailable");
  $("health").title = h.audio_message || "";
}).catch(() => {});
