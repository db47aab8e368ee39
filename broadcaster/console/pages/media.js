// Media library: the list (title, zone, length, measured and applied loudness), upload with a progress
// bar (the loudness result shown when the server has measured and normalised it), play in the page.

import {
  api, can, clear, confirmDialog, field, h, inZones, select, showError, t, table, toast, upload, zoneName, zoneTree,
} from "/ui/core.js";

export default {
  strings: {
    vi: {
      title: "Thư viện âm thanh", upload: "Tải lên", file: "Tệp (WAV, FLAC, Ogg, MP3)", item_title: "Tên",
      uploading: "Đang tải lên… {pct}%", processing: "Máy chủ đang đo và chuẩn hóa độ lớn…", length: "Thời lượng",
      measured: "Độ lớn đo được", target: "Sau chuẩn hóa", gain: "Đã chỉnh", play: "Nghe", result: "Đã tải lên “{title}”: đo được {orig} LUFS, chỉnh {gain} dB, nay {lufs} LUFS",
      uploaded_by: "Người tải", delete_confirm: "Xóa “{title}”?", deleted: "Đã xóa “{title}”", pick_file: "Hãy chọn một tệp",
    },
    en: {
      title: "Media library", upload: "Upload", file: "File (WAV, FLAC, Ogg, MP3)", item_title: "Title",
      uploading: "Uploading… {pct}%", processing: "The server is measuring and normalising the loudness…", length: "Length",
      measured: "Measured loudness", target: "After normalising", gain: "Gain applied", play: "Play", result: "Uploaded “{title}”: measured {orig} LUFS, {gain} dB applied, now {lufs} LUFS",
      uploaded_by: "Uploaded by", delete_confirm: "Delete “{title}”?", deleted: "Deleted “{title}”", pick_file: "Choose a file",
    },
  },

  async render(root, ctx) {
    root.append(h("h1", {}, t("title")));
    const listBox = h("div", { id: "media-list" });
    const player = h("audio", { id: "media-player", controls: true, preload: "none" });
    if (can("write")) root.append(uploadForm(() => refresh()));
    root.append(h("div", { class: "card player-card" }, player), listBox);
    ctx.onLeave(() => { player.pause(); player.removeAttribute("src"); });

    async function refresh() {
      const items = [];
      for (let offset = 0; ; offset += 500) {
        const page = await api("GET", `/api/v1/media?limit=500&offset=${offset}`);
        items.push(...page.items);
        if (items.length >= page.total || !page.items.length) break;
      }
      drawList(listBox, items, player, refresh);
    }
    await refresh();
  },
};

function gain(m) {
  return m.loudness_lufs === null || m.original_lufs === null ? null : m.loudness_lufs - m.original_lufs;
}
function db(x) { return x === null || x === undefined ? "—" : x.toFixed(1); }

function uploadForm(done) {
  const zones = Object.keys(zoneTree.names).filter((z) => inZones(z) && can("write", z) && zoneTree.kinds[z] !== "hamlet");
  const file = h("input", { type: "file", name: "file", accept: "audio/*,.wav,.flac,.ogg,.opus,.mp3", required: true });
  const title = h("input", { name: "title", required: true, maxlength: 200 });
  const zone = select("zone", zones.map((z) => [z, zoneName(z)]), zones[0]);
  const bar = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true });
  const status = h("div", { id: "upload-status", role: "status" });
  file.addEventListener("change", () => {
    if (file.files[0] && !title.value) title.value = file.files[0].name.replace(/\.[^.]+$/, "");
  });
  const form = h("form", { class: "card", id: "upload-form" },
    h("h2", {}, t("upload")),
    h("div", { class: "row" }, field(t("file"), file), field(t("item_title"), title), field(t("zone"), zone)),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", "data-write": "" }, t("upload"))),
    bar, status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) { showError(form, new Error(t("pick_file"))); return; }
    bar.hidden = false;
    bar.value = 0;
    clear(status).append(t("uploading", { pct: 0 }));
    const query = new URLSearchParams({ zone: zone.value, title: title.value.trim(), filename: chosen.name });
    try {
      const made = await upload("POST", `/api/v1/media?${query}`, chosen, {
        contentType: "application/octet-stream",
        onProgress: (fraction) => {
          bar.value = Math.round(fraction * 100);
          status.textContent = fraction < 1 ? t("uploading", { pct: bar.value }) : t("processing");
        },
      });
      bar.value = 100;
      const message = t("result", { title: made.title, orig: db(made.original_lufs), gain: db(gain(made)), lufs: db(made.loudness_lufs) });
      clear(status).append(h("div", { class: "loudness-result", dataset: { media: made.id, lufs: made.loudness_lufs, original: made.original_lufs } }, message));
      toast(message);
      form.querySelectorAll(":scope > .error").forEach((e) => e.remove());
      file.value = "";
      title.value = "";
      await done();
    } catch (exc) {
      bar.hidden = true;
      clear(status);
      showError(form, exc);
    }
  });
  return form;
}

function drawList(box, items, player, refresh) {
  const rows = items.map((m) => h("tr", { dataset: { media: m.id } },
    h("td", {}, h("strong", {}, m.title), h("div", { class: "muted" }, m.filename)),
    h("td", {}, zoneName(m.zone)),
    h("td", {}, `${Math.floor(m.duration_s / 60)}:${String(Math.round(m.duration_s % 60)).padStart(2, "0")}`),
    h("td", { class: "lufs", dataset: { original: m.original_lufs ?? "" } }, `${db(m.original_lufs)} LUFS`),
    h("td", {}, `${db(m.loudness_lufs)} LUFS`, h("div", { class: "muted" }, `${db(gain(m))} dB`)),
    h("td", {}, m.uploaded_by),
    h("td", {},
      h("button", { type: "button", class: "secondary", dataset: { action: "play", id: m.id }, onclick: () => {
        player.src = `/api/v1/media/${encodeURIComponent(m.id)}/audio`;
        player.dataset.playing = m.id;
        player.play().catch(() => {});
      } }, "▶ ", t("play")),
      can("write", m.zone) ? h("button", { type: "button", class: "link", "data-write": "", dataset: { action: "delete", id: m.id }, onclick: async () => {
        if (!(await confirmDialog(t("delete"), t("delete_confirm", { title: m.title }), t("delete"), true))) return;
        try {
          await api("DELETE", `/api/v1/media/${encodeURIComponent(m.id)}`);
          toast(t("deleted", { title: m.title }));
          await refresh();
        } catch (exc) { showError(box, exc); }
      } }, t("delete")) : null)));
  clear(box).append(table([t("item_title"), t("zone"), t("length"), t("measured"), t("target"), t("uploaded_by"), t("actions")], rows));
}
