// The search page: one database, a spoken (recorded or uploaded) or typed query, top-k results with scores.
// Every API call goes to this server; the API key lives in a variable of this page and nowhere else.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    key: "",               // the API key, in page memory only
    config: null,          // GET /ui/config
    indexes: [],           // GET /indexes
    speechSpace: null,     // the speech model's space (GET /readyz): databases of other spaces take text only
    recorder: null,
    recordStart: 0,
    timer: null,
    limitTimer: null,
  };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // fetch + the key header + the API's own error message on failure. Returns { body, ms }.
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.key) headers.set((state.config && state.config.key_header) || "X-API-Key", state.key);
    const started = performance.now();
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (err) {
      throw new ApiError(0, `the server did not answer (${err.message}); is miner serve still running?`);
    }
    const ms = performance.now() - started;
    const type = response.headers.get("content-type") || "";
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      if (type.includes("json")) {
        const body = await response.json().catch(() => null);
        if (body && body.error && body.error.message) message = body.error.message;
        else if (body && body.detail) message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
      throw new ApiError(response.status, message);
    }
    const body = type.includes("json") ? await response.json() : await response.blob();
    return { body, ms };
  }

  function showError(err) {
    const box = $("error");
    box.textContent = err.status ? `Error ${err.status}: ${err.message}` : `Error: ${err.message}`;
    box.hidden = false;
    $("status").textContent = "The request failed.";
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function selectedDb() {
    return state.indexes.find((d) => d.name === $("db").value) || null;
  }

  function kValue() {
    const max = state.config ? state.config.max_k : 100;
    const k = Math.round(Number($("k").value) || 5);
    return Math.max(1, Math.min(max, k));
  }

  function fmtSeconds(s) {
    const m = Math.floor(s / 60);
    const rest = s - 60 * m;
    return `${m}:${rest.toFixed(1).padStart(4, "0")}`;
  }

  // ---- server information ------------------------------------------------------------------------------
  async function loadConfig() {
    const { body } = await api("/ui/config");
    state.config = body;
    $("k").max = String(body.max_k);
    $("rec-limit").textContent = fmtSeconds(body.max_audio_seconds);
    $("text-query").maxLength = body.max_text_chars;
    $("key-section").hidden = !body.auth_required;
    if (body.auth_required) $("api-key").focus();
  }

  async function loadModel() {
    for (let attempt = 0; attempt < 300; attempt++) {
      const response = await fetch("/readyz");
      const body = await response.json().catch(() => ({}));
      if (response.ok && body.speech_model) {
        const m = body.speech_model;
        state.speechSpace = m.space_id;
        const weight = m.fusion_weight != null ? `, w=${m.fusion_weight}` : "";
        $("model-info").textContent = `${m.kind}${weight}: ${m.model_id} (space ${m.space_id}, dim ${m.dim})`;
        return;
      }
      if (body.status === "failed") {
        $("model-info").textContent = `the server failed to load: ${body.detail}`;
        return;
      }
      $("model-info").textContent = "the server is loading its models…";
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  async function loadIndexes() {
    try {
      const { body } = await api("/indexes");
      state.indexes = body;
      const select = $("db");
      const previous = select.value;
      select.replaceChildren(
        ...body.map((d) => new Option(`${d.name} (${d.kind}, ${d.size.toLocaleString()} items)`, d.name)),
      );
      if (body.some((d) => d.name === previous)) select.value = previous;
      if (!body.length) $("status").textContent = "This server serves no database yet (miner index build).";
      updateDbNote();
      clearError();
      if (state.key) $("key-status").textContent = "Key accepted.";
    } catch (err) {
      if (err.status === 401) $("key-status").textContent = "Enter a valid key to list the databases.";
      showError(err);
    }
  }

  function updateDbNote() {
    const db = selectedDb();
    const note = $("db-note");
    if (!db) {
      note.textContent = "";
      return;
    }
    const textOnly = state.speechSpace && db.space_id !== state.speechSpace;
    const margins = db.margins ? "results carry a margin score" : "no margin scores (no neighbourhood means)";
    note.textContent = `${db.kind} database, space ${db.space_id}, ${margins}` +
      (textOnly ? "; another space than the speech model's: text queries only." : ".");
    $("record").disabled = !!textOnly;
    $("file").disabled = !!textOnly;
  }

  // ---- searching -----------------------------------------------------------------------------------------
  async function searchAudio(blob, filename, what = filename) {
    const db = selectedDb();
    if (!db) return showError(new ApiError(0, "no database selected"));
    clearError();
    const form = new FormData();
    form.append("audio", blob, filename);
    form.append(db.kind === "text" ? "text_db" : "speech_db", db.name);
    form.append("k", String(kValue()));
    const path = db.kind === "text" ? "/search/speech-to-text" : "/search/speech-to-speech";
    $("status").textContent = `Searching ${db.name} for ${what}…`;
    await run(path, { method: "POST", body: form }, db, what);
  }

  async function searchText(text) {
    const db = selectedDb();
    if (!db) return showError(new ApiError(0, "no database selected"));
    clearError();
    const path = db.kind === "text" ? "/search/text-to-text" : "/search/text-to-speech";
    $("status").textContent = `Searching ${db.name} for the text…`;
    const options = {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, db: db.name, k: kValue() }),
    };
    await run(path, options, db, "text query");
  }

  async function run(path, options, db, what) {
    $("results").replaceChildren();
    $("latency").textContent = "";
    try {
      const { body, ms } = await api(path, options);
      render(body.results, db);
      $("status").textContent = `${body.results.length} results from ${db.name} for ${what}` +
        (body.truncated ? " (the text was cut to the encoder's length)" : "") + ".";
      $("latency").textContent = `Answered in ${Math.round(ms)} ms (server: ${Math.round(body.took_ms)} ms).`;
    } catch (err) {
      showError(err);
    }
  }

  function bar(fraction, cls, title) {
    const outer = document.createElement("div");
    outer.className = `bar bar-${cls}`;
    outer.title = title;
    outer.setAttribute("role", "img");
    outer.setAttribute("aria-label", title);
    const inner = document.createElement("span");
    inner.style.width = `${Math.round(Math.max(0, Math.min(1, fraction)) * 100)}%`;
    outer.append(inner);
    return outer;
  }

  function render(results, db) {
    const list = $("results");
    const best = Math.max(...results.map((r) => r.margin || 0), 1e-9);
    for (const r of results) {
      const item = document.createElement("li");
      item.className = "result";
      const label = document.createElement("div");
      label.className = "label";
      const main = document.createElement("span");
      main.className = "text";
      if (db.kind === "text") {
        main.textContent = r.text;
      } else {
        const start = r.start != null ? ` @${r.start.toFixed(2)} s` : "";
        const dur = r.duration != null ? ` +${r.duration.toFixed(2)} s` : "";
        main.textContent = `${r.path}${start}${dur}`;
      }
      label.append(main);
      if (r.lang) {
        const lang = document.createElement("span");
        lang.className = "lang";
        lang.textContent = r.lang;
        label.append(lang);
      }
      if (db.kind === "speech") label.append(playButton(db.name, r));
      const meta = document.createElement("div");
      meta.className = "meta";
      const cos = document.createElement("span");
      cos.className = "cosine";
      cos.textContent = `cos ${r.cosine.toFixed(3)}`;
      const margin = document.createElement("span");
      margin.className = "margin";
      margin.textContent = r.margin != null ? `margin ${r.margin.toFixed(3)}` : "margin –";
      meta.append(cos, bar(r.cosine, "cosine", `cosine ${r.cosine.toFixed(3)} (bar: 0 to 1)`), margin);
      meta.append(r.margin != null
        ? bar(r.margin / best, "margin", `margin ${r.margin.toFixed(3)} (bar: share of the best margin listed)`)
        : document.createElement("span"));
      item.append(label, meta);
      list.append(item);
    }
  }

  function playButton(dbName, hit) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "play";
    button.textContent = "▶ Play";
    button.setAttribute("aria-label", `Play ${hit.path}`);
    button.addEventListener("click", async () => {
      try {
        const { body } = await api(`/audio/${encodeURIComponent(dbName)}/${hit.id}`);
        const url = URL.createObjectURL(body);
        const audio = new Audio(url);
        audio.addEventListener("ended", () => URL.revokeObjectURL(url));
        await audio.play();
      } catch (err) {
        showError(err);
      }
    });
    return button;
  }

  // ---- recording -----------------------------------------------------------------------------------------
  async function startRecording() {
    clearError();
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      return showError(new ApiError(0, "this browser cannot record here (MediaRecorder needs https or localhost)"));
    }
    let stream;
    try {
      // raw microphone: echo cancellation, noise suppression and gain control reshape speech the model never heard
      const raw = { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 };
      stream = await navigator.mediaDevices.getUserMedia({ audio: raw });
    } catch (err) {
      return showError(new ApiError(0, `no microphone: ${err.message}`));
    }
    const chunks = [];
    const recorder = new MediaRecorder(stream);
    recorder.addEventListener("dataavailable", (e) => { if (e.data.size) chunks.push(e.data); });
    recorder.addEventListener("stop", async () => {
      stream.getTracks().forEach((t) => t.stop());
      const blob = new Blob(chunks, { type: recorder.mimeType });
      $("status").textContent = `Converting the recording (${recorder.mimeType}) to WAV…`;
      try {
        const { wav, seconds, kept } = await window.MinerWav.toWav16k(blob);
        const what = `recording.wav (${seconds.toFixed(1)} s recorded, ${kept.toFixed(1)} s sent after cutting silence)`;
        await searchAudio(wav, "recording.wav", what);
      } catch (err) {
        showError(new ApiError(0, `could not convert the recording: ${err.message}`));
      }
    });
    state.recorder = recorder;
    recorder.start(250);
    state.recordStart = performance.now();
    const limit = state.config ? state.config.max_audio_seconds : 60;
    // stop a little before the server's limit: the WAV must not come out longer than it accepts
    state.limitTimer = setTimeout(stopRecording, Math.max(0.5, limit - 0.3) * 1000);
    state.timer = setInterval(() => {
      $("rec-timer").textContent = fmtSeconds((performance.now() - state.recordStart) / 1000);
    }, 100);
    $("rec-timer").textContent = fmtSeconds(0);
    $("rec-indicator").hidden = false;
    $("record").textContent = "■ Stop";
    $("record").setAttribute("aria-pressed", "true");
  }

  function stopRecording() {
    if (!state.recorder) return;
    clearTimeout(state.limitTimer);
    clearInterval(state.timer);
    const recorder = state.recorder;
    state.recorder = null;
    if (recorder.state !== "inactive") recorder.stop();
    $("rec-indicator").hidden = true;
    $("record").textContent = "● Record";
    $("record").setAttribute("aria-pressed", "false");
  }

  // ---- wiring --------------------------------------------------------------------------------------------
  function wire() {
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      state.key = $("api-key").value.trim();
      $("key-status").textContent = "Checking the key…";
      loadIndexes();
    });
    $("db").addEventListener("change", updateDbNote);
    $("record").addEventListener("click", () => (state.recorder ? stopRecording() : startRecording()));
    document.addEventListener("keydown", (e) => { if (e.key === "Escape" && state.recorder) stopRecording(); });
    $("file").addEventListener("change", () => {
      const file = $("file").files[0];
      $("file").value = "";  // choosing the same file again searches again
      if (file) searchAudio(file, file.name);
    });
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      const file = e.dataTransfer.files[0];
      if (file) searchAudio(file, file.name);
    });
    $("text-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = $("text-query").value.trim();
      if (text) searchText(text);
    });
  }

  async function init() {
    wire();
    try {
      await loadConfig();
    } catch (err) {
      return showError(err);
    }
    await loadModel();
    if (state.config.auth_required) {
      $("status").textContent = "Enter the API key above to list the databases.";
    } else {
      await loadIndexes();
    }
    document.body.dataset.ready = "true";  // tests and scripts wait for this
  }

  init();
})();
