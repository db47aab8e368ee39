// Monitor: listen to a channel the user may see, in the page: its Ogg/Opus stream, or its HLS
// playlist where the browser cannot play Ogg/Opus (Safari on an iPhone). A channel closed to public
// listening is played with the console's session (the stream takes the cookie of a user who may see it).

import { api, clear, h, select, t, zoneName } from "/ui/core.js";

export default {
  strings: {
    vi: {
      title: "Nghe kiểm tra", listen: "Nghe", stop: "Dừng", format: "Định dạng: {f}", playing: "Đang nghe {name}",
      stopped: "Đã dừng", no_hls: "Trình duyệt này không phát được Ogg/Opus và kênh không có HLS",
      failed: "Không phát được: {why}", public: "công khai", private: "nội bộ",
    },
    en: {
      title: "Monitor", listen: "Listen", stop: "Stop", format: "Format: {f}", playing: "Listening to {name}",
      stopped: "Stopped", no_hls: "This browser cannot play Ogg/Opus and the channel has no HLS",
      failed: "Cannot play: {why}", public: "public", private: "internal",
    },
  },

  async render(root, ctx) {
    const channels = (await api("GET", "/api/v1/channels?limit=500")).items;
    root.append(h("h1", {}, t("title")));
    if (!channels.length) {
      root.append(h("p", { class: "muted" }, t("none")));
      return;
    }
    const audio = h("audio", { id: "monitor-audio", controls: true, preload: "none" });
    const picker = select("channel", channels.map((c) => [c.id, `${c.name} (${zoneName(c.zone)}, ${c.public ? t("public") : t("private")})`]),
      ctx.params.channel || channels[0].id);
    picker.id = "monitor-channel";
    const info = h("p", { id: "monitor-state", role: "status", class: "muted" });
    const ogg = audio.canPlayType("audio/ogg; codecs=opus") !== "";
    const listen = () => {
      const ch = channels.find((c) => c.id === picker.value);
      const url = ogg ? ch.stream : ch.hls;
      if (!url) { info.textContent = t("no_hls"); return; }
      audio.src = url;
      audio.dataset.channel = ch.id;
      audio.dataset.format = ogg ? "ogg" : "hls";
      audio.play().catch((exc) => { info.textContent = t("failed", { why: exc.message }); });
      clear(info).append(t("playing", { name: ch.name }), " · ", t("format", { f: ogg ? "Ogg/Opus" : "HLS (AAC)" }));
    };
    const stop = () => { audio.pause(); audio.removeAttribute("src"); audio.load(); info.textContent = t("stopped"); };
    audio.addEventListener("error", () => { if (audio.getAttribute("src")) info.textContent = t("failed", { why: audio.error?.message || audio.error?.code }); });
    root.append(h("div", { class: "card" },
      h("div", { class: "buttons" }, picker,
        h("button", { type: "button", class: "primary", dataset: { action: "listen" }, onclick: listen }, "▶ ", t("listen")),
        h("button", { type: "button", class: "secondary", dataset: { action: "stop" }, onclick: stop }, "■ ", t("stop"))),
      audio, info));
    ctx.onLeave(() => { audio.pause(); audio.removeAttribute("src"); audio.load(); });
  },
};
