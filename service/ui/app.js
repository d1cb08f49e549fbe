// gaitid's operator page: calls the HTTP API from the browser and shows its answers (no framework, no build).
"use strict";

const KEY_STORAGE = "gaitid.apiKey";   // sessionStorage: the key lives as long as the tab
const KEY_HEADER = "X-API-Key";        // service/auth.py API_KEY_HEADER
const PAGE_SIZE = 25;

const ui = { role: null, subjectsOffset: 0, thumbUrls: [] };

// -- DOM helpers: text always goes in as text (subject names and messages come from users) ------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}
const $ = (selector, root = document) => root.querySelector(selector);
const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

// -- the API ---------------------------------------------------------------------------------------
class ApiFailure extends Error {
  // An ErrorBody answer ({error, message, details}) or a network failure, with the request id.
  constructor(status, body, requestId) {
    super(body.message);
    this.status = status;
    this.code = body.error;
    this.details = body.details || {};
    this.requestId = requestId;
  }
}

function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

async function api(path, { method = "GET", form = null, json = undefined } = {}) {
  const headers = {};
  if (apiKey()) headers[KEY_HEADER] = apiKey();
  let request = form;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    request = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: request });
  } catch (error) {
    throw new ApiFailure(0, { error: "network_error", message: `The server could not be reached (${error.message}).` }, null);
  }
  const requestId = response.headers.get("X-Request-ID");
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    const errorBody = body && typeof body.error === "string" ? body
      : { error: `http_${response.status}`, message: text.slice(0, 300) || response.statusText };
    if (response.status === 401) openKeyDialog();
    throw new ApiFailure(response.status, errorBody, requestId);
  }
  return body;
}

// An image the API serves (a track's thumbnail): fetched with the key, since an <img> cannot send it.
async function thumbnail(url, alt) {
  if (!url) return h("div", { class: "thumb-missing" }, "no thumbnail from this server");
  try {
    const headers = apiKey() ? { [KEY_HEADER]: apiKey() } : {};
    const response = await fetch(url, { headers });
    if (!response.ok) {
      let message = `thumbnail unavailable (${response.status})`;
      try { message = (await response.json()).message || message; } catch { /* not an ErrorBody */ }
      return h("div", { class: "thumb-missing" }, message);
    }
    const objectUrl = URL.createObjectURL(await response.blob());
    ui.thumbUrls.push(objectUrl);
    return h("img", { class: "thumb", src: objectUrl, alt });
  } catch (error) {
    return h("div", { class: "thumb-missing" }, `thumbnail unavailable (${error.message})`);
  }
}

function releaseThumbnails() {
  for (const url of ui.thumbUrls.splice(0)) URL.revokeObjectURL(url);
}

// -- messages ---------------------------------------------------------------------------------------
function showError(box, failure) {
  box.replaceChildren();
  if (!(failure instanceof ApiFailure)) {
    box.append(h("span", { class: "code" }, "error"), String(failure && failure.message || failure));
  } else {
    box.append(h("span", { class: "code" }, failure.code), failure.message);
    const extra = { ...failure.details };
    if (failure.requestId) extra.request_id = failure.requestId;
    if (Object.keys(extra).length) {
      box.append(h("details", {}, h("summary", {}, "details"), h("pre", {}, JSON.stringify(extra, null, 2))));
    }
  }
  box.hidden = false;
}

function clearError(box) { box.hidden = true; box.replaceChildren(); }

async function busy(section, work) {
  const spinner = $(".busy", section);
  const button = $("button[type=submit]", section);
  const errorBox = $(".error", section);
  clearError(errorBox);
  spinner.hidden = false;
  if (button) button.disabled = true;
  try {
    return await work();
  } catch (failure) {
    showError(errorBox, failure);
    return undefined;
  } finally {
    spinner.hidden = true;
    if (button) button.disabled = false;
  }
}

// -- views ------------------------------------------------------------------------------------------
const VIEWS = ["identify", "enroll", "subjects", "cameras", "report"];

function showView() {
  const wanted = location.hash.slice(1);
  const view = VIEWS.includes(wanted) ? wanted : "identify";
  for (const name of VIEWS) $(`#view-${name}`).hidden = name !== view;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === view);
  if (view === "subjects") loadSubjects();
  if (view === "cameras") loadCameras();
}

// -- the caller's gallery, API key and cameras ------------------------------------------------------------
async function loadGallery() {
  const status = $("#gallery-status");
  try {
    const gallery = await api("/gallery");
    ui.role = gallery.role;
    status.textContent = `gallery ${gallery.gallery} · ${gallery.role} · ${gallery.subjects} subject${gallery.subjects === 1 ? "" : "s"}`;
    clearError($("#global-error"));
  } catch (failure) {
    ui.role = null;
    status.textContent = failure.status === 401 ? "API key needed" : "not connected";
    if (failure.status !== 401) showError($("#global-error"), failure);
  }
}

function openKeyDialog() {
  const dialog = $("#key-dialog");
  if (dialog.open) return;
  $("input[name=key]", dialog).value = apiKey();
  dialog.showModal();
}

function setupKeyDialog() {
  const dialog = $("#key-dialog");
  $("#key-button").addEventListener("click", openKeyDialog);
  $("#key-form").addEventListener("submit", () => {
    const key = $("input[name=key]", dialog).value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
    afterKeyChange();
  });
  $("#key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    dialog.close();
    afterKeyChange();
  });
}

function afterKeyChange() {
  loadGallery();
  loadCameras();
  if (!$("#view-subjects").hidden) loadSubjects();
}

async function loadCameras() {
  let cameras = [];
  const errorBox = $("#view-cameras .error");
  clearError(errorBox);
  try {
    const answer = await api("/cameras");
    cameras = answer.cameras;
  } catch (failure) {  // the forms then have no camera field; the cameras page says why
    showError(errorBox, failure);
  }
  renderCameras(cameras);
  for (const field of document.querySelectorAll(".camera-field")) {
    const select = $("select", field);
    select.replaceChildren(h("option", { value: "" }, "none"),
      ...cameras.map((c) => h("option", { value: c.camera_id },
        c.camera_id + (c.rotation === null || c.rotation === undefined ? "" : ` (turned ${c.rotation}°)`))));
    field.hidden = cameras.length === 0;
  }
}

const pct = (x) => `${Math.round(x * 100)}%`;

function renderCameras(cameras) {
  const list = $("#cameras-list");
  if (!cameras.length) {
    list.replaceChildren(h("p", { class: "muted" }, "No cameras yet. Clips are then processed as their files say."));
    return;
  }
  const canChange = ui.role === null || ui.role === "admin";
  list.replaceChildren(h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "camera"), h("th", {}, "rotation"), h("th", { class: "hide-narrow" }, "region"),
      h("th", { class: "hide-narrow" }, "empty scene"), h("th", {}, ""))),
    h("tbody", {}, cameras.map((c) => h("tr", { "data-camera-id": c.camera_id },
      h("td", {}, c.camera_id),
      h("td", {}, c.rotation === null ? "as the file says" : `${c.rotation}°`),
      h("td", { class: "hide-narrow" }, c.roi ? `${pct(c.roi[0])}–${pct(c.roi[2])} across, ${pct(c.roi[1])}–${pct(c.roi[3])} down`
        : "whole picture"),
      h("td", { class: "hide-narrow" }, c.background ? "clip stored" : "none"),
      h("td", { class: "actions" }, canChange ? [
        h("button", { type: "button", class: "small secondary", onclick: () => editCamera(c) }, "Edit"),
        h("button", { type: "button", class: "small danger", onclick: () => deleteCamera(c) }, "Delete")] : null)))))));
}

function editCamera(camera) {
  const form = $("#camera-form");
  form.elements.camera_id.value = camera.camera_id;
  form.elements.rotation.value = camera.rotation === null ? "" : String(camera.rotation);
  ["roi_x1", "roi_y1", "roi_x2", "roi_y2"].forEach((name, i) => { form.elements[name].value = camera.roi ? camera.roi[i] : ""; });
  form.elements.background.value = "";
  form.scrollIntoView({ behavior: "smooth" });
}

async function deleteCamera(camera) {
  const confirmed = await confirmAction(`Delete camera ${camera.camera_id}?`,
    `Its settings${camera.background ? " and its empty-scene clip" : ""} are removed; clips sent with its id are then refused.`,
    "Delete");
  if (!confirmed) return;
  try {
    await api(`/cameras/${encodeURIComponent(camera.camera_id)}`, { method: "DELETE" });
  } catch (failure) {
    showError($("#view-cameras .error"), failure);
    return;
  }
  loadCameras();
}

function setupCameras() {
  const section = $("#view-cameras");
  const form = $("#camera-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = form.elements.camera_id.value.trim();
    const path = `/cameras/${encodeURIComponent(id)}`;
    const roiValues = ["roi_x1", "roi_y1", "roi_x2", "roi_y2"].map((name) => form.elements[name].value.trim());
    const saved = await busy(section, async () => {
      if (roiValues.some((v) => v !== "") && roiValues.some((v) => v === "")) {
        throw new Error("Give all four edges of the region, or none for the whole picture.");
      }
      let existing = null;  // keep the stored empty-scene clip unless a new one is uploaded
      try { existing = await api(path); } catch (failure) { if (failure.status !== 404) throw failure; }
      const settings = {
        rotation: form.elements.rotation.value === "" ? null : Number(form.elements.rotation.value),
        roi: roiValues[0] === "" ? null : roiValues.map(Number),
        background: existing ? existing.background : null,
      };
      await api(path, { method: "PUT", json: settings });
      const clip = form.elements.background.files[0];
      if (clip) {
        const data = new FormData();
        data.append("video", clip);
        await api(`${path}/background`, { method: "POST", form: data });
      }
      return true;
    });
    if (saved) {
      form.reset();
      loadCameras();
    }
  });
}

// Optional form fields that mean "not given" when empty are left out of the request.
function clipForm(form, names) {
  const data = new FormData();
  for (const name of names) {
    const field = form.elements[name];
    if (field && !field.closest("[hidden]") && field.value.trim() !== "") data.append(name, field.value.trim());
  }
  return data;
}

// -- identify ---------------------------------------------------------------------------------------
function setupIdentify() {
  const section = $("#view-identify");
  const form = $("#identify-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = $("#identify-result");
    result.replaceChildren();
    releaseThumbnails();
    const data = clipForm(form, ["camera_id", "rotation"]);
    data.append("video", form.elements.video.files[0]);
    const answer = await busy(section, () => api("/identify", { method: "POST", form: data }));
    if (answer) result.replaceChildren(...(await renderIdentification(answer)));
  });
}

function videoSummary(answer) {
  const v = answer.video;
  const parts = [`${v.frames} frames analysed` + (v.sampled_from ? ` (thinned from ${v.sampled_from})` : "")];
  parts.push(`${fmt(v.fps, 1)} fps`, `${v.size[0]}×${v.size[1]}`);
  if (v.rotation) parts.push(`rotated ${v.rotation}°`);
  const tracks = answer.tracks || [];
  parts.push(`${tracks.length} ${tracks.length === 1 ? "person" : "people"}` +
    (answer.dropped_tracks ? ` (+${answer.dropped_tracks} too short or small to analyse)` : ""));
  if (answer.timings_ms && answer.timings_ms.request) parts.push(`${fmt(answer.timings_ms.request / 1000, 1)} s`);
  return h("p", { class: "summary" }, parts.join(" · "));
}

async function renderIdentification(answer) {
  const cards = await Promise.all(answer.tracks.map((t) => trackCard(t, answer.threshold)));
  return [videoSummary(answer), h("div", { class: "tracks answers" }, cards)];
}

const thumbUrlOf = (t) => t.thumbnail_url ?? (t.track && t.track.thumbnail_url);
const qualityOf = (t) => t.quality ?? (t.track && t.track.quality);

function trackHeader(track) {
  return h("header", {}, h("strong", {}, `Track ${track.track_id}`),
    h("span", { class: "muted" }, `frames ${track.first_frame}–${track.last_frame} · ${track.frames} used`));
}

async function trackCard(t, threshold) {
  const track = t.track;
  const best = t.candidates[0];
  const margin = t.margin === undefined || t.margin === null ? null : `margin ${fmt(t.margin)}`;
  const decision = t.unknown
    ? h("div", { class: "decision unknown", "data-decision": "unknown" }, "Unknown",
      h("small", {}, best ? `closest: ${best.display_name} ${fmt(best.similarity)} < threshold ${fmt(threshold)}`
        : "the gallery is empty"))
    : h("div", { class: "decision known", "data-decision": "known" }, t.display_name,
      h("small", {}, [`${t.subject_id}`, `similarity ${fmt(t.similarity)} ≥ ${fmt(threshold)}`, margin]
        .filter(Boolean).join(" · ")));
  return h("article", { class: "track", "data-track-id": track.track_id },
    trackHeader(track),
    h("div", { class: "body" },
      await thumbnail(thumbUrlOf(t), `walker of track ${track.track_id}`),
      h("div", { class: "facts" }, decision, qualityBlock(qualityOf(t)), candidatesTable(t.candidates, threshold))));
}

function qualityBlock(quality) {
  if (!quality) return null;
  const items = [];
  const item = (label, value) => items.push(h("span", {}, `${label} `, h("b", {}, value)));
  if (quality.frames_used !== undefined) item("frames", quality.frames_used);
  if (quality.mask_coverage !== undefined && quality.mask_coverage !== null) item("mask", `${Math.round(quality.mask_coverage * 100)}%`);
  if (quality.frames_cut_at_border !== undefined) item("cut at border", quality.frames_cut_at_border);
  if (quality.person_height_px !== undefined && quality.person_height_px !== null) item("height", `${Math.round(quality.person_height_px)} px`);
  if (quality.walk_seconds !== undefined && quality.walk_seconds !== null) item("walk", `${fmt(quality.walk_seconds, 1)} s`);
  const warnings = quality.warnings || [];
  return h("div", {},
    warnings.length ? h("ul", { class: "warnings" }, warnings.map((w) => h("li", {}, w))) : null,
    h("div", { class: "quality" }, items));
}

function candidatesTable(candidates, threshold) {
  if (!candidates.length) return h("p", { class: "muted" }, "No enrolled subjects to compare with.");
  return h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "candidate"), h("th", { class: "num" }, "similarity"))),
    h("tbody", {}, candidates.map((c) => h("tr", {},
      h("td", {}, c.display_name, c.display_name !== c.subject_id ? h("span", { class: "muted" }, ` (${c.subject_id})`) : null),
      h("td", { class: "num" },
        similarityBar(c.similarity), fmt(c.similarity), c.similarity >= threshold ? " ✓" : "")))));
}

function similarityBar(similarity) {
  const bar = h("span", { class: "bar" });
  bar.style.width = `${(Math.max(0, similarity) * 3).toFixed(2)}rem`;
  return bar;
}

// -- enroll -----------------------------------------------------------------------------------------
const ENROLL_FIELDS = ["subject_id", "display_name", "if_exists", "camera_id", "rotation"];

function setupEnroll() {
  const section = $("#view-enroll");
  const form = $("#enroll-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    releaseThumbnails();
    $("#enroll-result").replaceChildren();
    const data = clipForm(form, ENROLL_FIELDS);
    data.append("video", form.elements.video.files[0]);
    await enroll(section, data);
  });
}

// `resend`, when given, makes the request again with the clip itself when the server's copy expired.
async function enroll(section, data, resend = null) {
  const result = $("#enroll-result");
  const answer = await busy(section, async () => {
    try {
      return await api("/enroll", { method: "POST", form: data });
    } catch (failure) {
      if (resend && failure instanceof ApiFailure && failure.code === "clip_expired") {
        return api("/enroll", { method: "POST", form: resend() });
      }
      if (failure instanceof ApiFailure && failure.code === "multiple_tracks") {
        result.replaceChildren(...(await trackPicker(failure)));
        return undefined;
      }
      throw failure;
    }
  });
  if (answer) {
    result.replaceChildren(h("div", { class: "notice", "data-enrolled": answer.subject_id },
      `${answer.created ? "Enrolled" : "Added a walk to"} ${answer.display_name} (${answer.subject_id}): ` +
      `track ${answer.track.track_id}, frames ${answer.track.first_frame}–${answer.track.last_frame}; ` +
      `${answer.sequence_count} walk${answer.sequence_count === 1 ? "" : "s"} enrolled.`));
    loadGallery();
  }
}

// The 409 of a clip with several people: one card per track; choosing one enrolls it from the server's
// copy of the clip (clip_id) when it has one, else by sending the clip again with the track_id.
async function trackPicker(failure) {
  const form = $("#enroll-form");
  const section = $("#view-enroll");
  const clipId = failure.details.clip_id;
  const cards = await Promise.all(failure.details.tracks.map(async (track) => {
    // The enroll form and this track, then where the clip comes from: the server's copy or the file.
    const formWith = (name, value) => {
      const data = clipForm(form, ENROLL_FIELDS);
      data.append("track_id", track.track_id);
      data.append(name, value);
      return data;
    };
    const withClip = () => formWith("video", form.elements.video.files[0]);
    const choose = async () => {
      const data = clipId ? formWith("clip_id", clipId) : withClip();
      const buttons = section.querySelectorAll("button.pick");
      for (const button of buttons) button.disabled = true;
      await enroll(section, data, clipId ? withClip : null);
      for (const button of buttons) button.disabled = false;
    };
    const box = track.median_box;
    const quality = qualityOf(track);
    return h("article", { class: "track", "data-track-id": track.track_id },
      trackHeader(track),
      await thumbnail(thumbUrlOf(track), `walker of track ${track.track_id}`),
      box && !quality ? h("div", { class: "quality" }, h("span", {}, "height ", h("b", {}, `${Math.round(box[3] - box[1])} px`)),
        h("span", {}, "at x ", h("b", {}, `${Math.round((box[0] + box[2]) / 2)}`))) : null,
      qualityBlock(quality),
      h("button", { type: "button", class: "pick", onclick: choose }, `Enroll track ${track.track_id}`));
  }));
  const count = failure.details.tracks.length;
  return [h("p", {}, `The clip shows ${count} people. Choose the one to enroll as ${form.elements.subject_id.value.trim()}:`),
    h("div", { class: "tracks" }, cards)];
}

// -- subjects ---------------------------------------------------------------------------------------
async function loadSubjects() {
  const section = $("#view-subjects");
  const list = $("#subjects-list");
  const errorBox = $(".error", section);
  clearError(errorBox);
  let page;
  try {
    page = await api(`/subjects?offset=${ui.subjectsOffset}&limit=${PAGE_SIZE}`);
  } catch (failure) {
    showError(errorBox, failure);
    list.replaceChildren();
    return;
  }
  if (page.total > 0 && page.subjects.length === 0 && ui.subjectsOffset > 0) {  // the last page emptied
    ui.subjectsOffset = Math.max(0, ui.subjectsOffset - PAGE_SIZE);
    return loadSubjects();
  }
  const first = page.total ? page.offset + 1 : 0;
  $("#subjects-count").textContent = `${page.total} subject${page.total === 1 ? "" : "s"}` +
    (page.total > page.subjects.length ? ` · showing ${first}–${page.offset + page.subjects.length}` : "");
  $(".pager", section).hidden = page.total <= PAGE_SIZE && page.offset === 0;
  $("#subjects-prev").disabled = page.offset === 0;
  $("#subjects-next").disabled = page.offset + page.subjects.length >= page.total;
  if (!page.subjects.length) {
    list.replaceChildren(h("p", { class: "muted" }, "Nobody is enrolled yet. Enroll a person from a walking clip."));
    return;
  }
  const canDelete = ui.role === null || ui.role === "admin";
  list.replaceChildren(h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "name"), h("th", { class: "num" }, "walks"),
      h("th", { class: "hide-narrow" }, "updated"), h("th", {}, ""))),
    h("tbody", {}, page.subjects.map((s) => h("tr", { "data-subject-id": s.subject_id },
      h("td", {}, s.display_name, s.display_name !== s.subject_id ? h("span", { class: "muted" }, ` (${s.subject_id})`) : null),
      h("td", { class: "num" }, s.sequence_count),
      h("td", { class: "hide-narrow muted" }, new Date(s.updated_at).toLocaleString()),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "small secondary sightings", onclick: () => loadSightings(s) }, "Sightings"),
        canDelete ? h("button", { type: "button", class: "small danger", onclick: () => deleteSubject(s) }, "Delete") : null)))))));
}

// Where and when a subject appears in the archive that `gaitid rescore` processed (GET /subjects/{id}/sightings:
// a server started with GAITID_RESCORE_STATE; otherwise its 404 no_archive says how to enable it).
async function loadSightings(subject) {
  const panel = $("#sightings");
  const errorBox = $(".error", panel);
  const list = $("#sightings-list");
  panel.hidden = false;
  panel.dataset.subjectId = subject.subject_id;
  $("#sightings-title").textContent = `Where ${subject.display_name} was seen`;
  $("#sightings-summary").textContent = "searching the re-scored archive…";
  clearError(errorBox);
  list.replaceChildren();
  let answer;
  try {
    answer = await api(`/subjects/${encodeURIComponent(subject.subject_id)}/sightings`);
  } catch (failure) {
    $("#sightings-summary").textContent = "";
    showError(errorBox, failure);
    return;
  }
  const count = answer.sightings.length;
  $("#sightings-summary").textContent = `${count} sighting${count === 1 ? "" : "s"} among ${answer.archive_tracks} ` +
    `archive tracks (similarity ≥ ${fmt(answer.threshold)}), in time order.`;
  if (!count) return;
  const rows = await Promise.all(answer.sightings.map(async (s) => h("tr", { "data-video": s.video },
    h("td", { class: "strip" }, await thumbnail(s.thumbnail_url, `track ${s.track_id} of ${s.video}`)),
    h("td", {}, s.start_time ? new Date(s.start_time).toLocaleString() : "time unknown",
      h("div", { class: "muted" }, s.camera || "no camera")),
    h("td", { class: "video" }, h("span", { title: s.video }, s.video.split("/").pop()),
      h("div", { class: "muted" }, s.start_s === null ? `frames ${s.first_frame}–${s.last_frame}`
        : `${fmt(s.start_s, 1)}–${fmt(s.end_s, 1)} s`)),
    h("td", { class: "num" }, fmt(s.similarity)))));
  list.replaceChildren(h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "walk"), h("th", {}, "when, camera"), h("th", {}, "video"),
      h("th", { class: "num" }, "similarity"))),
    h("tbody", {}, rows))));
}

function confirmAction(title, text, okLabel) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

async function deleteSubject(subject) {
  const walks = `${subject.sequence_count} enrolled walk${subject.sequence_count === 1 ? "" : "s"}`;
  const confirmed = await confirmAction(`Delete ${subject.display_name}?`,
    `This erases ${subject.display_name} (${subject.subject_id}) and ${walks} from the gallery. It cannot be undone.`,
    "Delete");
  if (!confirmed) return;
  const section = $("#view-subjects");
  try {
    await api(`/subjects/${encodeURIComponent(subject.subject_id)}`, { method: "DELETE" });
  } catch (failure) {
    showError($(".error", section), failure);
    return;
  }
  if ($("#sightings").dataset.subjectId === subject.subject_id) $("#sightings").hidden = true;
  await loadSubjects();
  loadGallery();
}

function setupSubjects() {
  $("#subjects-refresh").addEventListener("click", loadSubjects);
  $("#subjects-prev").addEventListener("click", () => { ui.subjectsOffset = Math.max(0, ui.subjectsOffset - PAGE_SIZE); loadSubjects(); });
  $("#subjects-next").addEventListener("click", () => { ui.subjectsOffset += PAGE_SIZE; loadSubjects(); });
}

// -- re-scoring report --------------------------------------------------------------------------------
function setupReport() {
  const section = $("#view-report");
  const frame = $("#report-frame");
  $("#report-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    clearError($(".error", section));
    frame.hidden = true;
    if (!file) return;
    const text = await file.text();
    if (!/^\s*(<!doctype html|<html)/i.test(text)) {
      showError($(".error", section), new Error(`${file.name} is not an HTML report (gaitid rescore-report writes one).`));
      return;
    }
    if (frame.src) URL.revokeObjectURL(frame.src);
    frame.src = URL.createObjectURL(new Blob([text], { type: "text/html" }));
    frame.hidden = false;
  });
}

// -- start ------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  setupKeyDialog();
  setupIdentify();
  setupEnroll();
  setupSubjects();
  setupCameras();
  setupReport();
  window.addEventListener("hashchange", showView);
  showView();
  loadGallery();
  loadCameras();
});
