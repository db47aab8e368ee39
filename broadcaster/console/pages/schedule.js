// Schedule: a week calendar (7 day columns, 24 hours) of one channel's programme airings and bulletin
// slots, drawn in the server's schedule time zone (the one programmes are entered in); previous/next
// week; a form to create, edit (PUT) and delete programmes, with the server's clash message in place.

import { api, can, clear, confirmDialog, field, h, select, showError, state, t, toast, zoneName } from "/ui/core.js";

const DAY = 86400;
const HOUR_PX = 28;

export default {
  strings: {
    vi: {
      title: "Lịch phát", prev: "‹ Tuần trước", next: "Tuần sau ›", today: "Tuần này", week_of: "Tuần {from} – {to}",
      new_programme: "Lên lịch chương trình", edit_programme: "Sửa chương trình", programme_title: "Tên chương trình",
      media: "Tệp âm thanh (chọn một hoặc nhiều)", start: "Bắt đầu (giờ {tz})", recurrence: "Lặp lại",
      once: "Một lần", daily: "Hằng ngày", weekdays: "Thứ Hai – Thứ Sáu", weekly: "Hằng tuần vào các ngày",
      until: "Đến ngày (tùy chọn)", duration: "Thời lượng (giây, để trống: theo tệp)", class: "Loại",
      normal: "Thông thường", background: "Nền", target: "Vùng phát", saved: "Đã lên lịch “{title}”",
      updated: "Đã sửa “{title}”", deleted: "Đã xóa “{title}”", delete_confirm: "Xóa chương trình “{title}” khỏi lịch?",
      programme: "Chương trình", bulletin: "Bản tin", no_media: "Thư viện chưa có tệp nào: hãy tải lên ở trang Thư viện",
      days: "Thứ Hai,Thứ Ba,Thứ Tư,Thứ Năm,Thứ Sáu,Thứ Bảy,Chủ Nhật", new: "Chương trình mới",
    },
    en: {
      title: "Schedule", prev: "‹ Previous week", next: "Next week ›", today: "This week", week_of: "Week {from} – {to}",
      new_programme: "Schedule a programme", edit_programme: "Edit programme", programme_title: "Title",
      media: "Media (one or more)", start: "Start ({tz} time)", recurrence: "Repeat",
      once: "Once", daily: "Daily", weekdays: "Monday – Friday", weekly: "Weekly on these days",
      until: "Until (optional)", duration: "Length (seconds; empty: the media's)", class: "Class",
      normal: "Normal", background: "Background", target: "Target zone", saved: "Scheduled “{title}”",
      updated: "Updated “{title}”", deleted: "Deleted “{title}”", delete_confirm: "Remove programme “{title}” from the schedule?",
      programme: "Programme", bulletin: "Bulletin", no_media: "The library is empty: upload on the Media page",
      days: "Monday,Tuesday,Wednesday,Thursday,Friday,Saturday,Sunday", new: "New programme",
    },
  },

  async render(root, ctx) {
    const channels = (await api("GET", "/api/v1/channels?limit=500")).items;
    root.append(h("h1", {}, t("title")));
    if (!channels.length) {
      root.append(h("p", { class: "muted" }, t("none")));
      return;
    }
    let channel = channels.find((c) => c.id === ctx.params.channel) || channels[0];
    // The server's schedule time zone: the calendar is drawn in it and programmes are entered in it.
    const nowS = Date.now() / 1000;  // the browser's clock may differ from the server's: both ends given
    const probe = await api("GET", `/api/v1/calendar?channel=${encodeURIComponent(channel.id)}&from=${nowS}&to=${nowS + 1}`);
    const tz = probe.timezone;
    let week = weekStart(Date.now() / 1000, tz);
    const picker = select("channel", channels.map((c) => [c.id, `${c.name} (${zoneName(c.zone)})`]), channel.id);
    picker.id = "schedule-channel";
    const label = h("strong", { id: "week-label" });
    const grid = h("div", { class: "week-wrap", id: "week" });
    const formBox = h("div", { id: "programme-form-box" });
    const bar = h("div", { class: "buttons week-bar" },
      field(t("channel"), picker),
      h("button", { type: "button", class: "secondary", dataset: { action: "prev-week" }, onclick: () => move(-7) }, t("prev")),
      h("button", { type: "button", class: "secondary", dataset: { action: "this-week" }, onclick: () => { week = weekStart(Date.now() / 1000, tz); draw(); } }, t("today")),
      h("button", { type: "button", class: "secondary", dataset: { action: "next-week" }, onclick: () => move(7) }, t("next")),
      label);
    root.append(bar, grid, formBox);
    picker.addEventListener("change", () => { channel = channels.find((c) => c.id === picker.value); showForm(null); draw(); });

    function move(days) { week = weekStart(week + days * DAY + DAY / 2, tz); draw(); }

    async function draw() {
      const end = weekStart(week + 7 * DAY + DAY / 2, tz);
      const fmt = (s) => new Intl.DateTimeFormat(state.lang === "vi" ? "vi-VN" : "en-GB", { timeZone: tz, day: "numeric", month: "numeric" }).format(s * 1000);
      label.textContent = t("week_of", { from: fmt(week), to: fmt(end - 1) });
      try {
        const cal = await api("GET", `/api/v1/calendar?channel=${encodeURIComponent(channel.id)}&from=${week}&to=${end}`);
        drawWeek(grid, cal.items, week, end, tz, (item) => edit(item));
      } catch (exc) {
        showError(grid, exc);
      }
    }

    async function edit(item) {
      if (item.kind !== "programme") return;
      const programme = await api("GET", `/api/v1/programmes/${encodeURIComponent(item.id)}`);
      showForm(programme);
    }

    let media = null;
    async function showForm(programme) {
      clear(formBox);
      if (!can("write", channel.zone)) return;
      if (media === null) media = (await api("GET", "/api/v1/media?limit=500")).items;
      formBox.append(programmeForm({ channel, programme, media, tz, done: async (message) => {
        if (message) toast(message);
        await draw();
        showForm(null);
      } }));
    }

    await draw();
    await showForm(null);
  },
};

// ---- time in the schedule's zone -------------------------------------------------------------

function parts(unix, tz) {
  const out = {};
  for (const p of new Intl.DateTimeFormat("en-GB", { timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", weekday: "short" }).formatToParts(unix * 1000)) {
    out[p.type] = p.value;
  }
  return { y: +out.year, m: +out.month, d: +out.day, H: +out.hour, M: +out.minute, S: +out.second,
    wd: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].indexOf(out.weekday) };
}

// Unix seconds of a local wall time in tz (exact but for the hour a clock change skips).
function instant(y, m, d, H, M, tz) {
  let guess = Date.UTC(y, m - 1, d, H, M) / 1000;
  for (let i = 0; i < 2; i++) {
    const p = parts(guess, tz);
    guess += Date.UTC(y, m - 1, d, H, M) / 1000 - Date.UTC(p.y, p.m - 1, p.d, p.H, p.M, p.S) / 1000;
  }
  return guess;
}

function weekStart(unix, tz) {
  const p = parts(unix, tz);
  const monday = new Date(Date.UTC(p.y, p.m - 1, p.d - p.wd));
  return instant(monday.getUTCFullYear(), monday.getUTCMonth() + 1, monday.getUTCDate(), 0, 0, tz);
}

function hhmm(unix, tz) {
  const p = parts(unix, tz);
  return `${String(p.H).padStart(2, "0")}:${String(p.M).padStart(2, "0")}`;
}

function localValue(unix, tz) {
  const p = parts(unix, tz), pad = (n) => String(n).padStart(2, "0");
  return `${p.y}-${pad(p.m)}-${pad(p.d)}T${pad(p.H)}:${pad(p.M)}`;
}

// ---- the week grid -------------------------------------------------------------------------

function drawWeek(box, items, start, end, tz, onPick) {
  const days = t("days").split(",");
  const starts = [];
  for (let i = 0; i < 7; i++) starts.push(instantDay(start, i, tz));
  starts.push(end);
  const hours = h("div", { class: "cal-hours" }, h("div", { class: "cal-head" }),
    Array.from({ length: 24 }, (_, i) => h("div", { class: "cal-hour" }, `${String(i).padStart(2, "0")}:00`)));
  const columns = starts.slice(0, 7).map((dayStart, i) => {
    const dayEnd = starts[i + 1];
    const p = parts(dayStart, tz);
    const body = h("div", { class: "cal-day-body" });
    body.style.height = `${24 * HOUR_PX}px`;
    for (const item of items) {
      const s = Math.max(item.start, dayStart), e = Math.min(item.end ?? item.start + 600, dayEnd);
      if (e <= dayStart || s >= dayEnd || (item.end === null && item.start < dayStart)) continue;
      const block = h("button", { type: "button", class: `cal-item ${item.kind}`, title: `${item.title} ${hhmm(item.start, tz)}`,
        dataset: { kind: item.kind, id: item.id, start: String(item.start) }, onclick: () => onPick(item) },
      h("span", { class: "cal-time" }, hhmm(item.start, tz)), " ", item.title);
      block.style.top = `${((s - dayStart) / 3600) * HOUR_PX}px`;
      block.style.height = `${Math.max(18, ((e - s) / 3600) * HOUR_PX)}px`;
      body.append(block);
    }
    return h("div", { class: "cal-day", dataset: { day: `${p.y}-${String(p.m).padStart(2, "0")}-${String(p.d).padStart(2, "0")}` } },
      h("div", { class: "cal-head" }, days[i], h("br", {}), `${p.d}/${p.m}`), body);
  });
  clear(box).append(h("div", { class: "cal-grid" }, hours, columns));
}

function instantDay(weekStartUnix, i, tz) {
  const p = parts(weekStartUnix, tz);
  const day = new Date(Date.UTC(p.y, p.m - 1, p.d + i));
  return instant(day.getUTCFullYear(), day.getUTCMonth() + 1, day.getUTCDate(), 0, 0, tz);
}

// ---- the programme form ----------------------------------------------------------------------

function programmeForm({ channel, programme, media, tz, done }) {
  const p = programme;
  const title = h("input", { name: "title", required: true, maxlength: 200, value: p?.title || "" });
  const list = h("select", { name: "media", multiple: true, size: Math.min(6, Math.max(2, media.length)), required: true },
    media.map((m) => h("option", { value: m.id, selected: p?.media?.includes(m.id) }, `${m.title} (${Math.round(m.duration_s)} s)`)));
  const start = h("input", { name: "start", type: "datetime-local", required: true,
    value: p ? p.start_local.slice(0, 16) : localValue(Math.ceil(Date.now() / 1000 / 3600) * 3600, tz) });
  const recurrence = select("recurrence", [["once", t("once")], ["daily", t("daily")], ["weekdays", t("weekdays")], ["weekly", t("weekly")]], p?.recurrence || "once");
  const dayBoxes = t("days").split(",").map((d, i) => h("label", { class: "day-box" },
    h("input", { type: "checkbox", name: "weekday", value: String(i), checked: p?.weekdays?.includes(i) }), " ", d));
  const days = h("div", { class: "weekday-boxes", hidden: (p?.recurrence || "once") !== "weekly" }, dayBoxes);
  recurrence.addEventListener("change", () => { days.hidden = recurrence.value !== "weekly"; });
  const until = h("input", { name: "until", type: "date", value: p?.until || "" });
  const duration = h("input", { name: "duration_s", type: "number", min: 1, max: 86400, step: "any", value: p ? String(p.duration_s) : "" });
  const klass = select("priority", [["normal", t("normal")], ["background", t("background")]], p?.priority === 10 ? "background" : "normal");
  const form = h("form", { class: "card", id: "programme-form", dataset: { editing: p?.id || "" } },
    h("h2", {}, p ? t("edit_programme") : t("new_programme")),
    media.length ? null : h("p", { class: "warning" }, t("no_media")),
    h("div", { class: "row" }, field(t("programme_title"), title), field(t("target"), h("input", { value: zoneName(channel.zone), disabled: true }))),
    field(t("media"), list),
    h("div", { class: "row" }, field(t("start", { tz }), start), field(t("recurrence"), recurrence), field(t("until"), until)),
    days,
    h("div", { class: "row" }, field(t("duration"), duration), field(t("class"), klass)),
    h("div", { class: "buttons" },
      h("button", { type: "submit", class: "primary", "data-write": "" }, p ? t("save") : t("create")),
      p ? h("button", { type: "button", class: "danger", "data-write": "", dataset: { action: "delete" }, onclick: remove }, t("delete")) : null,
      p ? h("button", { type: "button", class: "secondary", onclick: () => done("") }, t("new")) : null));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { title: title.value.trim(), zones: p ? p.zones : [channel.zone], start: start.value,
      media: [...list.selectedOptions].map((o) => o.value), recurrence: recurrence.value, priority: klass.value };
    if (recurrence.value === "weekly") body.weekdays = [...form.querySelectorAll("input[name=weekday]:checked")].map((c) => Number(c.value));
    if (until.value) body.until = until.value;
    if (duration.value) body.duration_s = Number(duration.value);
    try {
      if (p) {
        await api("PUT", `/api/v1/programmes/${encodeURIComponent(p.id)}`, body);
        await done(t("updated", { title: body.title }));
      } else {
        await api("POST", "/api/v1/programmes", body);
        await done(t("saved", { title: body.title }));
      }
    } catch (exc) {
      showError(form, exc);  // a clash: the server names the programme it clashes with
    }
  });
  async function remove() {
    if (!(await confirmDialog(t("delete"), t("delete_confirm", { title: p.title }), t("delete"), true))) return;
    try {
      await api("DELETE", `/api/v1/programmes/${encodeURIComponent(p.id)}`);
      await done(t("deleted", { title: p.title }));
    } catch (exc) {
      showError(form, exc);
    }
  }
  return form;
}
