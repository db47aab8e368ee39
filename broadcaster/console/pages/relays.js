// Relays: the library of upstream radio (national, provincial) a commune may carry, playing one now on a
// channel for a while, stopping it, and scheduling one as a programme (api/programmes.py takes a relay
// instead of media). What is on air comes from the channels' own description (GET /api/v1/channels).

import {
  api, can, clear, confirmDialog, field, fmtTime, h, inZones, select, showError, t, table, toast, zoneName, zoneTree,
} from "/ui/core.js";

const strings = {
  vi: {
    title: "Tiếp sóng", library: "Thư viện nguồn tiếp sóng", add: "Thêm nguồn", url: "Địa chỉ luồng (http/https)",
    on_air: "Đang tiếp sóng", none_on_air: "Không kênh nào đang tiếp sóng theo yêu cầu", play: "Phát ngay",
    stop: "Dừng", duration: "Trong (phút)", priority: "Mức ưu tiên", p_live: "Trực tiếp (trên chương trình)",
    p_normal: "Thường", p_background: "Nền (khi không có gì)", schedule: "Lên lịch tiếp sóng", start: "Bắt đầu",
    recurrence: "Lặp lại", once: "Một lần", daily: "Hằng ngày", weekdays: "Thứ 2–6", weekly: "Hằng tuần",
    until: "Đến ngày", scheduled: "Lịch tiếp sóng", next: "Lần tới", added: "Đã thêm nguồn", started: "Đã bắt đầu tiếp sóng",
    stopped: "Đã dừng", removed: "Đã xóa", remove_title: "Xóa nguồn tiếp sóng?", remove_body: "“{name}” sẽ bị xóa khỏi thư viện.",
    state: "Tình trạng", relay: "Nguồn", ends: "Kết thúc", programme_removed: "Đã xóa lịch", days: "Các ngày (tuần)",
  },
  en: {
    title: "Relays", library: "Relay library", add: "Add a relay", url: "Stream URL (http/https)",
    on_air: "Relaying now", none_on_air: "No channel is relaying on demand", play: "Play now",
    stop: "Stop", duration: "For (minutes)", priority: "Priority", p_live: "Live (over programmes)",
    p_normal: "Normal", p_background: "Background (when nothing else)", schedule: "Schedule a relay", start: "Start",
    recurrence: "Repeat", once: "Once", daily: "Daily", weekdays: "Mon–Fri", weekly: "Weekly",
    until: "Until", scheduled: "Scheduled relays", next: "Next", added: "Relay added", started: "Relay started",
    stopped: "Stopped", removed: "Removed", remove_title: "Remove the relay?", remove_body: "“{name}” leaves the library.",
    state: "State", relay: "Relay", ends: "Ends", programme_removed: "Schedule removed", days: "Days (weekly)",
  },
};

const DAYS = ["T2", "T3", "T4", "T5", "T6", "T7", "CN"];

// A relay of zone Z may play on a channel whose zone lies under Z (the server decides; this narrows the lists).
function usableOn(relay, channel) {
  for (let z = channel.zone, guard = 0; z && guard < 64; z = zoneTree.parents[z], guard++) {
    if (z === relay.zone) return true;
  }
  return false;
}

export default {
  strings,
  async render(root, ctx) {
    root.append(h("h1", {}, t("title")));
    const onAir = h("div", { id: "relays-on-air" });
    const library = h("div", { id: "relay-library" });
    const scheduled = h("div", { id: "relay-programmes" });
    const forms = h("div", { class: "cards" });
    root.append(h("h2", {}, t("on_air")), onAir, h("h2", {}, t("library")), library, forms, h("h2", {}, t("scheduled")), scheduled);

    const [relays, channels, programmes] = await Promise.all([
      api("GET", "/api/v1/relays?limit=500"), api("GET", "/api/v1/channels?limit=500"), api("GET", "/api/v1/programmes?limit=500")]);
    const writable = channels.items.filter((c) => can("write", c.zone));
    const byId = Object.fromEntries(relays.items.map((r) => [r.id, r]));
    const done = (message) => { toast(message); ctx.reload(); };

    // --- on air now ---
    const running = channels.items.flatMap((c) => (c.relays || []).map((r) => ({ channel: c, run: r })));
    clear(onAir).append(running.length ? table([t("channel"), t("relay"), t("state"), t("ends"), ""],
      running.map(({ channel, run }) => h("tr", { dataset: { channel: channel.id, relay: run.relay } },
        h("td", {}, channel.name || channel.id), h("td", {}, run.name), h("td", {}, run.state),
        h("td", {}, fmtTime(run.ends_at)),
        h("td", {}, can("write", channel.zone) ? h("button", { type: "button", class: "danger", "data-write": "",
          dataset: { action: "stop", channel: channel.id }, onclick: async () => {
            try { await api("DELETE", `/api/v1/channels/${encodeURIComponent(channel.id)}/relay`); done(t("stopped")); }
            catch (exc) { showError(onAir, exc); }
          } }, t("stop")) : null))))
      : h("p", { class: "muted" }, t("none_on_air")));

    // --- the library, with play now per relay ---
    const rows = relays.items.map((r) => {
      const targets = writable.filter((c) => usableOn(r, c));
      let cell = null;
      if (targets.length) {
        const channel = select("channel", targets.map((c) => [c.id, c.name || c.id]), targets[0].id);
        const minutes = h("input", { name: "minutes", type: "number", min: 1, max: 1440, value: 60, class: "short" });
        const priority = select("priority", [["live", t("p_live")], ["normal", t("p_normal")], ["background", t("p_background")]], "live");
        cell = h("div", { class: "inline-form" }, channel, minutes, priority,
          h("button", { type: "button", class: "primary", "data-write": "", dataset: { action: "play", id: r.id }, onclick: async () => {
            try {
              await api("POST", `/api/v1/channels/${encodeURIComponent(channel.value)}/relay`,
                { relay: r.id, duration_s: Number(minutes.value) * 60, priority: priority.value });
              done(t("started"));
            } catch (exc) { showError(library, exc); }
          } }, t("play")));
      }
      const remove = can("write", r.zone) ? h("button", { type: "button", class: "secondary", "data-write": "",
        dataset: { action: "delete", id: r.id }, onclick: async () => {
          if (!await confirmDialog(t("remove_title"), t("remove_body", { name: r.name }), t("delete"), true)) return;
          try { await api("DELETE", `/api/v1/relays/${encodeURIComponent(r.id)}`); done(t("removed")); }
          catch (exc) { showError(library, exc); }
        } }, t("delete")) : null;
      return h("tr", { dataset: { id: r.id } }, h("td", {}, r.name), h("td", {}, zoneName(r.zone)),
        h("td", { class: "url" }, r.url), h("td", {}, cell, remove));
    });
    library.append(table([t("name"), t("zone"), t("url"), t("actions")], rows));

    // --- add to the library ---
    const zones = Object.keys(zoneTree.names).filter((z) => inZones(z) && can("write", z));
    if (zones.length) {
      const name = h("input", { name: "name", required: true, maxlength: 200, placeholder: "VOV1" });
      const url = h("input", { name: "url", type: "url", required: true, maxlength: 2000, placeholder: "https://" });
      const zone = select("zone", zones.map((z) => [z, zoneName(z)]), zones[0]);
      const form = h("form", { class: "card", id: "relay-add" }, h("h2", {}, t("add")),
        field(t("name"), name), field(t("url"), url), field(t("zone"), zone),
        h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", "data-write": "" }, t("add"))));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        try { await api("POST", "/api/v1/relays", { name: name.value, url: url.value, zone: zone.value }); done(t("added")); }
        catch (exc) { showError(form, exc); }
      });
      forms.append(form);
    }

    // --- schedule a relay as a programme ---
    if (relays.items.length && zones.length) {
      const relay = select("relay", relays.items.map((r) => [r.id, r.name]), relays.items[0].id);
      const target = h("select", { name: "zones", multiple: true, size: Math.min(5, Math.max(3, zones.length)) },
        zones.map((z) => h("option", { value: z }, zoneName(z))));
      const start = h("input", { name: "start", type: "datetime-local", required: true });
      const minutes = h("input", { name: "minutes", type: "number", min: 1, max: 1440, value: 30 });
      const recurrence = select("recurrence", ["once", "daily", "weekdays", "weekly"].map((r) => [r, t(r)]), "once");
      const days = h("div", { class: "weekdays" }, DAYS.map((d, i) => h("label", {}, h("input", { type: "checkbox", value: String(i) }), " ", d)));
      const until = h("input", { name: "until", type: "date" });
      const form = h("form", { class: "card", id: "relay-schedule" }, h("h2", {}, t("schedule")),
        field(t("relay"), relay), field(t("zones"), target), h("div", { class: "row" }, field(t("start"), start), field(t("duration"), minutes)),
        h("div", { class: "row" }, field(t("recurrence"), recurrence), field(t("until"), until)),
        h("div", { class: "field" }, h("span", { class: "label" }, t("days")), days),
        h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", "data-write": "" }, t("schedule"))));
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const chosen = relays.items.find((r) => r.id === relay.value);
        const body = { title: chosen ? chosen.name : relay.value, relay: relay.value,
          zones: Array.from(target.selectedOptions).map((o) => o.value), start: start.value,
          recurrence: recurrence.value, duration_s: Number(minutes.value) * 60, until: until.value || null };
        if (recurrence.value === "weekly") body.weekdays = Array.from(days.querySelectorAll("input:checked")).map((c) => Number(c.value));
        try { await api("POST", "/api/v1/programmes", body); done(t("saved")); }
        catch (exc) { showError(form, exc); }
      });
      forms.append(form);
    }

    // --- scheduled relays ---
    const relayProgrammes = programmes.items.filter((p) => p.relay);
    scheduled.append(table([t("name"), t("relay"), t("zones"), t("next"), ""], relayProgrammes.map((p) => h("tr", { dataset: { id: p.id } },
      h("td", {}, p.title), h("td", {}, byId[p.relay]?.name || p.relay), h("td", {}, p.zones.map(zoneName).join(", ")),
      h("td", {}, p.next.length ? fmtTime(p.next[0]) : "—"),
      h("td", {}, p.zones.every((z) => can("write", z)) ? h("button", { type: "button", class: "secondary", "data-write": "",
        dataset: { action: "unschedule", id: p.id }, onclick: async () => {
          try { await api("DELETE", `/api/v1/programmes/${encodeURIComponent(p.id)}`); done(t("programme_removed")); }
          catch (exc) { showError(scheduled, exc); }
        } }, t("delete")) : null)))));
  },
};
