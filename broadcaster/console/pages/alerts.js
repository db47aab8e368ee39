// Alerts: send one to zones (text read aloud, or a media item, repeated) after a confirmation step, cancel
// one on air, and watch loudspeakers acknowledge it. The counts come from polling the alerts API every
// two seconds while the page is open (the overview's event stream carries alerts too, but this page must
// not depend on it); an alert sent from here is followed by id after it leaves the on-air list.

import {
  api, can, clear, confirmDialog, field, h, inZones, select, showError, t, table, toast, zoneName, zoneTree,
} from "/ui/core.js";

const POLL_MS = 2000;
const ENDED = ["completed", "cancelled", "failed", "stopped", "interrupted"];

const strings = {
  vi: {
    title: "Cảnh báo khẩn", send: "Phát cảnh báo", on_air: "Đang phát", none_on_air: "Không có cảnh báo nào đang phát",
    headline: "Tiêu đề", text: "Nội dung đọc", media: "Hoặc tệp âm thanh", no_media: "— đọc nội dung —",
    priority: "Mức", emergency: "Khẩn cấp (50)", announcement: "Thông báo ưu tiên (40)", policy: "Chương trình khác",
    preempt: "Tắt hẳn", duck: "Giảm âm lượng", repeat: "Số lần lặp", volume: "Âm lượng loa (0–100)",
    zones_hint: "Giữ Ctrl (hoặc chạm) để chọn nhiều vùng", confirm_title: "Phát cảnh báo khẩn?",
    confirm_body: "Cảnh báo “{title}” sẽ phát ngay trên {zones}, ngắt các chương trình khác và bật loa.",
    confirm_send: "Phát ngay", cancel_alert: "Dừng cảnh báo", cancel_title: "Dừng cảnh báo?",
    cancel_body: "Cảnh báo “{title}” sẽ dừng ngay; loa trở lại như trước.", sent: "Đã phát cảnh báo",
    cancelled: "Đã dừng cảnh báo", commanded: "Loa nhận lệnh", acknowledged: "Loa xác nhận", started: "Bắt đầu",
    by: "Người phát", recent: "Cảnh báo vừa gửi từ trang này", st_on_air: "Đang phát", st_completed: "Đã xong",
    st_cancelled: "Đã dừng", st_failed: "Lỗi", st_stopped: "Đã dừng", st_interrupted: "Bị gián đoạn",
  },
  en: {
    title: "Alerts", send: "Send an alert", on_air: "On air", none_on_air: "No alert is on air",
    headline: "Title", text: "Text read aloud", media: "Or an audio file", no_media: "— read the text —",
    priority: "Level", emergency: "Emergency (50)", announcement: "Priority announcement (40)", policy: "Other programmes",
    preempt: "Muted", duck: "Lowered", repeat: "Repeats", volume: "Loudspeaker volume (0–100)",
    zones_hint: "Hold Ctrl (or tap) to pick several zones", confirm_title: "Send an emergency alert?",
    confirm_body: "“{title}” plays at once on {zones}, over every other programme, with the loudspeakers switched on.",
    confirm_send: "Send now", cancel_alert: "Stop the alert", cancel_title: "Stop the alert?",
    cancel_body: "“{title}” stops at once; loudspeakers go back as they were.", sent: "Alert sent",
    cancelled: "Alert stopped", commanded: "Loudspeakers commanded", acknowledged: "Acknowledged", started: "Started",
    by: "Sent by", recent: "Alerts sent from this page", st_on_air: "On air", st_completed: "Completed",
    st_cancelled: "Cancelled", st_failed: "Failed", st_stopped: "Stopped", st_interrupted: "Interrupted",
  },
};

function zonePicker() {
  const ids = Object.keys(zoneTree.names).filter((z) => inZones(z));
  return h("select", { name: "zones", multiple: true, size: Math.min(6, Math.max(3, ids.length)) },
    ids.map((z) => h("option", { value: z }, zoneName(z))));
}

function alertRow(a, onCancel) {
  const mayCancel = a.status === "on_air" && a.zones.every((z) => can("write", z));
  return h("tr", { dataset: { id: a.id, status: a.status } },
    h("td", {}, a.title), h("td", {}, h("span", { class: `badge ${a.status === "on_air" ? "on-air" : "off"}` }, t(`st_${a.status}`))),
    h("td", {}, a.zones.map(zoneName).join(", ")),
    h("td", { class: "num", dataset: { count: "commanded" } }, String(a.loudspeakers_commanded.length)),
    h("td", { class: "num", dataset: { count: "acknowledged" } }, String(a.loudspeakers_acknowledged.length)),
    h("td", {}, a.created_by),
    h("td", {}, mayCancel ? h("button", { type: "button", class: "danger", "data-write": "", dataset: { action: "cancel", id: a.id },
      onclick: () => onCancel(a) }, t("cancel_alert")) : null));
}

export default {
  strings,
  async render(root, ctx) {
    const sent = new Set();  // ids sent from here: followed after they end
    const onAir = h("div", { id: "alerts-on-air" }, h("p", { class: "loading" }, t("loading")));
    const recent = h("div", { id: "alerts-recent" });
    const headers = [t("headline"), t("status"), t("zones"), t("commanded"), t("acknowledged"), t("by"), ""];
    let timer = null;
    let stopped = false;
    ctx.onLeave(() => { stopped = true; clearTimeout(timer); });

    async function cancel(a) {
      if (!await confirmDialog(t("cancel_title"), t("cancel_body", { title: a.title }), t("cancel_alert"), true)) return;
      try {
        await api("POST", `/api/v1/alerts/${encodeURIComponent(a.id)}/cancel`);
        toast(t("cancelled"));
      } catch (exc) {
        showError(onAir, exc);
      }
      refresh();
    }

    async function refresh() {
      clearTimeout(timer);
      try {
        const active = (await api("GET", "/api/v1/alerts")).items;
        if (stopped) return;
        clear(onAir).append(active.length ? table(headers, active.map((a) => alertRow(a, cancel)))
          : h("p", { class: "muted" }, t("none_on_air")));
        const followed = [];
        for (const id of sent) {
          const now = active.find((a) => a.id === id) || await api("GET", `/api/v1/alerts/${encodeURIComponent(id)}`, undefined, { quiet: true }).catch(() => null);
          if (now) followed.push(now);
          if (!now || ENDED.includes(now.status)) sent.delete(id);  // shown once more, then no longer asked for
        }
        if (followed.length) clear(recent).append(h("h2", {}, t("recent")), table(headers, followed.map((a) => alertRow(a, cancel))));
      } catch (exc) {
        if (!stopped) showError(onAir, exc);
      }
      if (!stopped) timer = setTimeout(refresh, POLL_MS);
    }

    // What is on air first (and its cancel button): the form to send another is below it.
    root.append(h("h1", {}, t("title")), h("h2", {}, t("on_air")), onAir, recent);
    if (can("write")) {
      let media = [];
      try { media = (await api("GET", "/api/v1/media?limit=500")).items; } catch { /* text only */ }
      const title = h("input", { name: "title", required: true, maxlength: 200 });
      const text = h("textarea", { name: "text", maxlength: 5000 });
      const mediaSel = select("media", [["", t("no_media")], ...media.map((m) => [m.id, m.title])], "");
      const priority = select("priority", [["emergency", t("emergency")], ["announcement", t("announcement")]], "emergency");
      const policy = select("policy", [["preempt", t("preempt")], ["duck", t("duck")]], "preempt");
      const repeat = h("input", { name: "repeat", type: "number", min: 1, max: 20, value: 2 });
      const volume = h("input", { name: "volume", type: "number", min: 0, max: 100, placeholder: "100" });
      const zones = zonePicker();
      const form = h("form", { class: "card alert-form", id: "alert-form" },
        h("h2", {}, t("send")), field(t("headline"), title), field(t("zones"), zones, t("zones_hint")),
        field(t("text"), text), field(t("media"), mediaSel),
        h("div", { class: "row" }, field(t("priority"), priority), field(t("policy"), policy)),
        h("div", { class: "row" }, field(t("repeat"), repeat), field(t("volume"), volume)),
        h("div", { class: "buttons" }, h("button", { type: "submit", class: "danger", "data-write": "" }, t("send"))));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const chosen = Array.from(zones.selectedOptions).map((o) => o.value);
        const body = { title: title.value, zones: chosen, text: text.value, media: mediaSel.value || null,
          priority: priority.value, policy: policy.value, repeat: Number(repeat.value) || 1 };
        if (volume.value !== "") body.volume = Number(volume.value);
        const where = chosen.map(zoneName).join(", ") || "—";
        if (!await confirmDialog(t("confirm_title"), t("confirm_body", { title: title.value, zones: where }), t("confirm_send"), true)) return;
        try {
          const alert = await api("POST", "/api/v1/alerts", body);
          sent.add(alert.id);
          toast(t("sent"));
          title.value = "";
          text.value = "";
          form.querySelectorAll(":scope > .error").forEach((e) => e.remove());
        } catch (exc) {
          showError(form, exc);
        }
        refresh();
      });
      root.append(form);
    }
    await refresh();
  },
};
