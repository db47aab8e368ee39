// Go live from the browser: the microphone (with a level meter), an on-air/off-air switch and a
// push-to-talk button. The audio goes to the server over a WebSocket speaking the webcast protocol of
// AzuraCast's Web DJ and Liquidsoap's input.harbor: subprotocol "webcast", a first text message
// {"type":"hello","data":{mime,user,password}}, then MediaRecorder's WebM/Opus chunks, and
// {"type":"metadata"} messages for the title. The mount is the Icecast ingest's (/ingest/<channel>), so the
// session is a studio's: zone rules, class, recording, fallback. The hello carries credentials (the session
// cookie is HttpOnly and the server's webcast side reads the hello), so the page asks for the user's
// password once per go-live and forgets it after the hello. "On air" is shown when the server says so
// (the channel's live state), not when the socket opens; a refusal is the server's close reason.

import { api, can, clear, errorBox, field, h, select, state, t } from "/ui/core.js";

const MIME = "audio/webm;codecs=opus";
const TIMESLICE_MS = 100;
const BITRATE = 64000;
const CHECK_MS = 1000;

const strings = {
  vi: {
    title: "Phát trực tiếp", not_secure: "Trình duyệt chỉ cho dùng micro trên kết nối an toàn (HTTPS, hoặc http://127.0.0.1 trên chính máy chủ). Hãy mở trang qua HTTPS: máy chủ cần server.tls (chứng chỉ và khóa) hoặc đứng sau một reverse proxy có HTTPS.",
    no_recorder: "Trình duyệt này không ghi được âm thanh WebM/Opus; hãy dùng Chrome, Edge hoặc Firefox mới.",
    no_channel: "Bạn không có kênh nào được phép phát trực tiếp.", mic_on: "Bật micro", mic_off: "Tắt micro",
    mic_denied: "Không mở được micro: {why}", level: "Mức âm thanh", show_title: "Tên chương trình (hiện cho người nghe)",
    your_password: "Mật khẩu của bạn (để lên sóng)", password_hint: "Chỉ dùng cho lần lên sóng này; không được lưu lại",
    go_on: "Lên sóng", go_off: "Tắt sóng", ptt_mode: "Nhấn giữ để nói", ptt: "Giữ để nói",
    st_off: "Chưa lên sóng", st_connecting: "Đang kết nối…", st_on: "ĐANG PHÁT TRỰC TIẾP", st_muted: "Đang phát — micro tắt (nhả nút)",
    refused: "Máy chủ từ chối: {why}", ended: "Phiên phát đã kết thúc: {why}", lost: "Mất kết nối tới máy chủ",
    need_password: "Nhập mật khẩu của bạn để lên sóng",
  },
  en: {
    title: "Go live", not_secure: "Browsers give the microphone only to a secure page (HTTPS, or http://127.0.0.1 on the server itself). Open the console over HTTPS: the server needs server.tls (a certificate and key) or a reverse proxy with HTTPS.",
    no_recorder: "This browser cannot record WebM/Opus audio; use a recent Chrome, Edge or Firefox.",
    no_channel: "You have no channel you may go live on.", mic_on: "Microphone on", mic_off: "Microphone off",
    mic_denied: "The microphone did not open: {why}", level: "Level", show_title: "Programme title (shown to listeners)",
    your_password: "Your password (to go on air)", password_hint: "Used for this go-live only; never kept",
    go_on: "Go on air", go_off: "Go off air", ptt_mode: "Hold to talk", ptt: "Hold to talk",
    st_off: "Off air", st_connecting: "Connecting…", st_on: "ON AIR", st_muted: "On air — microphone muted (released)",
    refused: "The server refused: {why}", ended: "The session ended: {why}", lost: "The connection to the server was lost",
    need_password: "Type your password to go on air",
  },
};

export default {
  strings,
  async render(root, ctx) {
    root.append(h("h1", {}, t("title")));
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      root.append(h("p", { class: "warning", id: "live-not-secure", role: "alert" }, t("not_secure")));
      return;
    }
    if (!window.MediaRecorder || !MediaRecorder.isTypeSupported(MIME)) {
      root.append(h("p", { class: "warning", role: "alert" }, t("no_recorder")));
      return;
    }
    const channels = (await api("GET", "/api/v1/channels?limit=500")).items.filter((c) => can("write", c.zone));
    if (!channels.length) {
      root.append(h("p", { class: "muted" }, t("no_channel")));
      return;
    }

    // --- what is live: the microphone, its meter, the socket, the recorder ---
    let stream = null, audio = null, meterFrame = 0, socket = null, recorder = null, checker = null;
    let held = false, leaving = false, confirmed = false;

    const channel = select("channel", channels.map((c) => [c.id, c.name || c.id]), ctx.params.channel || channels[0].id);
    const showTitle = h("input", { name: "title", maxlength: 200, placeholder: "Bản tin sáng" });
    const password = h("input", { name: "password", type: "password", autocomplete: "current-password" });
    const pttMode = h("input", { type: "checkbox", name: "ptt-mode" });
    const bar = h("span", {});
    const meter = h("div", { class: "meter live-meter", id: "live-meter", role: "meter", "aria-label": t("level") }, bar);
    const status = h("div", { class: "live-status", id: "live-status", dataset: { state: "off" } }, t("st_off"));
    const notes = h("div", { id: "live-notes" });
    const mic = h("button", { type: "button", class: "secondary", id: "live-mic", dataset: { action: "mic" } }, t("mic_on"));
    const onAir = h("button", { type: "button", class: "danger live-switch", id: "live-switch", "data-write": "",
      dataset: { action: "on-air" }, disabled: true }, t("go_on"));
    const ptt = h("button", { type: "button", class: "primary live-ptt", id: "live-ptt", "data-write": "", dataset: { action: "ptt" }, disabled: true }, t("ptt"));

    // off (no socket), connecting (until the server reports the session), on, or muted (push-to-talk released).
    function showStatus() {
      const flowing = !pttMode.checked || held;
      const which = !socket ? "off" : !confirmed ? "connecting" : flowing ? "on" : "muted";
      status.dataset.state = which;
      status.className = `live-status ${which}`;
      status.textContent = t(`st_${which}`);
    }

    function trackOn() {
      const flowing = !pttMode.checked || held;
      stream?.getAudioTracks().forEach((track) => { track.enabled = flowing; });
      showStatus();
    }

    function drawMeter(analyser) {
      const samples = new Float32Array(analyser.fftSize);
      const step = () => {
        analyser.getFloatTimeDomainData(samples);
        let peak = 0;
        for (const s of samples) peak = Math.max(peak, Math.abs(s));
        const db = peak > 0 ? 20 * Math.log10(peak) : -100;
        const width = Math.max(0, Math.min(100, (db + 60) / 60 * 100));  // -60 dBFS .. 0 dBFS
        bar.style.width = `${width.toFixed(0)}%`;
        meter.dataset.db = db.toFixed(1);
        meterFrame = requestAnimationFrame(step);
      };
      step();
    }

    async function micOn() {
      clear(notes);
      try {
        stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
      } catch (exc) {
        notes.append(errorBox(new Error(t("mic_denied", { why: exc.message || exc.name }))));
        return;
      }
      audio = new AudioContext();
      const analyser = audio.createAnalyser();
      analyser.fftSize = 2048;
      audio.createMediaStreamSource(stream).connect(analyser);
      drawMeter(analyser);
      mic.textContent = t("mic_off");
      onAir.disabled = false;
      trackOn();
    }

    function micOff() {
      goOff();
      cancelAnimationFrame(meterFrame);
      stream?.getTracks().forEach((track) => track.stop());
      audio?.close().catch(() => {});
      stream = audio = null;
      bar.style.width = "0%";
      mic.textContent = t("mic_on");
      onAir.disabled = true;
    }

    function sendTitle() {
      if (socket?.readyState === WebSocket.OPEN && showTitle.value.trim()) {
        socket.send(JSON.stringify({ type: "metadata", data: { title: showTitle.value.trim() } }));
      }
    }

    // The server's word on whether the session is on air: the channel's live state.
    async function check(id) {
      try {
        const ch = await api("GET", `/api/v1/channels/${encodeURIComponent(id)}`, undefined, { quiet: true });
        if (!socket) return;
        confirmed = Boolean(ch.live && ch.live.by === state.session.name);
        status.dataset.session = ch.live?.session || "";
        showStatus();
      } catch { /* the next check tells */ }
    }

    function goOn() {
      clear(notes);
      if (!password.value) {
        notes.append(errorBox(new Error(t("need_password"))));
        password.focus();
        return;
      }
      const id = channel.value;
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      socket = new WebSocket(`${scheme}://${location.host}/ingest/${encodeURIComponent(id)}`, "webcast");
      socket.binaryType = "arraybuffer";
      const secret = password.value;
      password.value = "";
      confirmed = false;
      showStatus();
      onAir.textContent = t("go_off");
      onAir.dataset.action = "off-air";
      channel.disabled = true;
      const mine = socket;
      socket.addEventListener("open", () => {
        mine.send(JSON.stringify({ type: "hello", data: { mime: MIME, user: state.session.name, password: secret } }));
        sendTitle();
        recorder = new MediaRecorder(stream, { mimeType: MIME, audioBitsPerSecond: BITRATE });
        recorder.addEventListener("dataavailable", (event) => {
          if (event.data.size && mine.readyState === WebSocket.OPEN) mine.send(event.data);
        });
        recorder.start(TIMESLICE_MS);
        ptt.disabled = false;
        checker = setInterval(() => check(id), CHECK_MS);
        check(id);
      });
      socket.addEventListener("close", (event) => {
        if (socket !== mine) return;  // an older socket, already replaced
        const byUs = mine.byUs;
        stopSending();
        if (!byUs && !leaving) {
          const why = event.reason || t("lost");
          notes.append(errorBox(Object.assign(new Error(event.code >= 4000 ? t("refused", { why }) : t("ended", { why })),
            { code: String(event.code) })));
        }
      });
    }

    function stopSending() {
      clearInterval(checker);
      checker = null;
      if (recorder && recorder.state !== "inactive") recorder.stop();
      recorder = null;
      socket = null;
      ptt.disabled = true;
      channel.disabled = false;
      onAir.textContent = t("go_on");
      onAir.dataset.action = "on-air";
      confirmed = false;
      showStatus();
    }

    function goOff() {
      if (!socket) return;
      const closing = socket;
      closing.byUs = true;
      if (recorder && recorder.state !== "inactive") recorder.stop();
      stopSending();
      closing.close(1000, "off air");
    }

    mic.addEventListener("click", () => (stream ? micOff() : micOn()));
    onAir.addEventListener("click", () => (socket ? goOff() : goOn()));
    showTitle.addEventListener("change", sendTitle);
    pttMode.addEventListener("change", trackOn);
    const press = (down) => (event) => { event.preventDefault(); held = down; trackOn(); };
    ptt.addEventListener("pointerdown", press(true));
    for (const name of ["pointerup", "pointerleave", "pointercancel"]) ptt.addEventListener(name, press(false));
    ptt.addEventListener("keydown", (event) => { if (event.key === " " && !held) press(true)(event); });
    ptt.addEventListener("keyup", (event) => { if (event.key === " ") press(false)(event); });

    ctx.onLeave(() => { leaving = true; micOff(); });

    // A form, so Enter in the password field goes on air (and a password manager knows whose it is).
    const form = h("form", { class: "card live", id: "live-form" },
      h("input", { type: "text", name: "username", autocomplete: "username", value: state.session.name, hidden: true, readonly: true }),
      field(t("channel"), channel), field(t("show_title"), showTitle),
      h("div", { class: "buttons" }, mic), h("div", { class: "field" }, h("span", { class: "label" }, t("level")), meter),
      field(t("your_password"), password, t("password_hint")),
      h("label", { class: "check" }, pttMode, " ", t("ptt_mode")),
      status, notes,
      h("div", { class: "buttons live-buttons" }, onAir, ptt));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (stream && !socket) goOn();
    });
    root.append(form);
  },
};
