// Overview: one card per channel the user may see (what is on air, since when, who; the level; the
// loudspeakers online/offline) and the alerts on air with their acknowledgement counts. It updates
// itself from /api/v1/events (server-sent events, about once a second); the stream is closed on leave.

import { api, clear, fmtAgo, h, state, t, zoneName } from "/ui/core.js";

const KIND = {
  vi: { alert: "Cảnh báo", bulletin: "Bản tin", programme: "Chương trình", relay: "Tiếp sóng", live: "Trực tiếp",
    loop: "Chương trình nền", edge: "Tiếp sóng từ máy chủ tỉnh", other: "Khác" },
  en: { alert: "Alert", bulletin: "Bulletin", programme: "Programme", relay: "Relay", live: "Live",
    loop: "Background loop", edge: "From the origin", other: "Other" },
};
const CLASS = {
  vi: { background: "nền", scheduled: "thông thường", live: "trực tiếp", announcement: "ưu tiên", emergency: "khẩn cấp" },
  en: { background: "background", scheduled: "scheduled", live: "live", announcement: "priority", emergency: "emergency" },
};

const METER_FLOOR_DB = -60;

export default {
  strings: {
    vi: {
      title: "Tổng quan", on_air: "Đang phát", nothing: "Không phát gì (im lặng)", since: "từ {when}", by: "bởi {who}",
      level: "Mức âm", speakers: "Cụm loa", online: "{n} trực tuyến", offline: "{n} mất kết nối",
      listeners: "{n} người nghe qua mạng", alerts: "Cảnh báo đang phát", no_alerts: "Không có cảnh báo nào đang phát",
      acks: "{ack}/{sent} cụm loa đã xác nhận", connecting: "Đang kết nối…", live_updates: "Tự cập nhật",
      reconnecting: "Mất kết nối, đang thử lại…", no_channels: "Bạn chưa được giao kênh nào",
    },
    en: {
      title: "Overview", on_air: "On air", nothing: "Nothing on air (silence)", since: "since {when}", by: "by {who}",
      level: "Level", speakers: "Loudspeakers", online: "{n} online", offline: "{n} offline",
      listeners: "{n} internet listeners", alerts: "Alerts on air", no_alerts: "No alert on air",
      acks: "{ack}/{sent} loudspeakers acknowledged", connecting: "Connecting…", live_updates: "Live",
      reconnecting: "Connection lost, retrying…", no_channels: "No channel is assigned to you",
    },
  },

  async render(root, ctx) {
    const badge = h("span", { class: "badge", id: "overview-state" }, t("connecting"));
    const alerts = h("div", { id: "alerts-on-air", class: "card" });
    const cards = h("div", { class: "cards", id: "channel-cards" });
    root.append(h("div", { class: "overview-head" }, h("h1", {}, t("title")), badge), alerts, cards);
    let last = null, source = null, retry = null, closed = false;
    const draw = () => { if (last) { drawAlerts(alerts, last.alerts); drawCards(cards, last.channels); } };
    const connect = () => {
      source = new EventSource("/api/v1/events");
      source.addEventListener("overview", (event) => {
        last = JSON.parse(event.data);
        badge.textContent = t("live_updates");
        badge.className = "badge ok";
        draw();
      });
      source.onerror = () => {
        badge.textContent = t("reconnecting");
        badge.className = "badge off";
        // A network error is retried by the browser itself; a refusal (401, 429, 503) closes the stream:
        // ask for the session (a 401 there brings the sign-in back), then open it again.
        if (source.readyState === EventSource.CLOSED && !closed) {
          retry = setTimeout(() => api("GET", "/api/v1/session").then(() => { if (!closed) connect(); }, () => {}), 5000);
        }
      };
    };
    connect();
    // "since" reads "12 s ago": redrawn between events too, so a stalled stream does not freeze it.
    const timer = setInterval(draw, 5000);
    ctx.onLeave(() => { closed = true; source.close(); clearTimeout(retry); clearInterval(timer); });
  },
};

function lang() { return state.lang === "en" ? "en" : "vi"; }

function drawAlerts(box, alerts) {
  clear(box).append(h("h2", {}, t("alerts")));
  if (!alerts.length) {
    box.append(h("p", { class: "muted", id: "no-alerts" }, t("no_alerts")));
    return;
  }
  box.append(h("ul", { class: "alert-list" }, alerts.map((a) => h("li", { dataset: { alert: a.id } },
    h("span", { class: `badge ${a.class === "emergency" ? "danger" : "uu-tien"}` }, CLASS[lang()][a.class] || a.class),
    " ", h("strong", {}, a.title), " · ", zoneList(a.zones), " · ",
    h("span", { class: "acks", dataset: { acknowledged: a.acknowledged, commanded: a.commanded } },
      t("acks", { ack: a.acknowledged, sent: a.commanded })),
    a.since ? h("span", { class: "muted" }, " · ", t("since", { when: fmtAgo(a.since) })) : null))));
}

function zoneList(zones) { return zones.map(zoneName).join(", "); }

function drawCards(box, channels) {
  clear(box);
  if (!channels.length) {
    box.append(h("p", { class: "muted" }, t("no_channels")));
    return;
  }
  for (const ch of channels) box.append(card(ch));
}

function card(ch) {
  const air = ch.on_air;
  const rms = ch.level?.rms_dbfs;
  const fill = h("span", {});
  fill.style.width = `${rms === null || rms === undefined ? 0 : Math.max(0, Math.min(100, (rms - METER_FLOOR_DB) / -METER_FLOOR_DB * 100))}%`;
  const peak = ch.level?.peak_dbfs;
  return h("article", { class: `card channel-card${air?.class === "emergency" ? " emergency" : ""}`, dataset: { channel: ch.id } },
    h("h2", {}, ch.name, " ", h("small", { class: "muted" }, zoneName(ch.zone))),
    h("div", { class: "on-air", dataset: { kind: air ? air.kind : "none" } },
      air ? [
        h("span", { class: `badge ${air.class === "emergency" ? "danger" : air.class === "announcement" ? "uu-tien" : air.class === "live" ? "on-air" : "playing"}` },
          KIND[lang()][air.kind] || air.kind, " · ", CLASS[lang()][air.class] || air.class),
        " ", h("strong", { class: "item" }, air.name),
        h("div", { class: "muted" }, air.since ? t("since", { when: fmtAgo(air.since) }) : null,
          air.by ? [" · ", t("by", { who: air.by })] : null),
      ] : h("span", { class: "muted" }, t("nothing"))),
    h("div", { class: "level" },
      h("span", { class: "muted" }, t("level"), " "),
      h("div", { class: "meter", role: "meter", "aria-valuemin": METER_FLOOR_DB, "aria-valuemax": 0,
        "aria-valuenow": rms ?? METER_FLOOR_DB, dataset: { rms: rms ?? "", peak: peak ?? "" } }, fill),
      h("small", { class: "muted level-text" }, rms === null || rms === undefined ? "—" : `${rms.toFixed(1)} dBFS`)),
    h("div", { class: "speakers" }, t("speakers"), ": ",
      h("span", { class: "badge online", dataset: { online: ch.loudspeakers.online } }, t("online", { n: ch.loudspeakers.online })), " ",
      h("span", { class: "badge offline", dataset: { offline: ch.loudspeakers.offline } }, t("offline", { n: ch.loudspeakers.offline }))),
    ch.alerts.length ? h("ul", { class: "card-alerts" }, ch.alerts.map((a) => h("li", { dataset: { alert: a.id } },
      h("strong", {}, a.title), " — ", t("acks", { ack: a.acknowledged, sent: a.commanded })))) : null,
    h("small", { class: "muted" }, t("listeners", { n: ch.listeners })));
}
