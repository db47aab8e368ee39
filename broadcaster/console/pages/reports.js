// Reports and logs: a date range over the broadcast log (every play: when, what, who, how it ended) and
// the audit log (every change: who, what, from where), a page at a time; and the yearly report the rules
// ask for, downloaded as CSV or XLSX: fetched, then saved from a blob, so a refusal is the server's message
// shown in place rather than a page of JSON where the file was expected.

import {
  api, clear, field, fmtTime, h, inZones, select, showError, state, t, table, toast, zoneName, zoneTree,
} from "/ui/core.js";

const PAGE = 50;

const strings = {
  vi: {
    title: "Báo cáo & nhật ký", range: "Khoảng thời gian", show: "Xem", broadcasts: "Nhật ký phát sóng",
    audit: "Nhật ký thao tác", yearly: "Báo cáo năm", year: "Năm báo cáo", year_hint: "Năm 2025: từ 15/12/2024 đến 14/12/2025",
    format: "Định dạng", download: "Tải báo cáo", downloaded: "Đã tải {name}", again: "Lưu lại tệp {name}",
    kind: "Loại", item: "Nội dung", started: "Bắt đầu", ended: "Kết thúc", by: "Người thực hiện", outcome: "Kết quả",
    actor: "Người", action: "Thao tác", target: "Đối tượng", remote: "Từ địa chỉ", detail: "Chi tiết",
    prev: "‹ Trước", next: "Sau ›", page_of: "{from}–{to} / {total}", whole_province: "Toàn tỉnh",
  },
  en: {
    title: "Reports & logs", range: "Period", show: "Show", broadcasts: "Broadcast log",
    audit: "Audit log", yearly: "Yearly report", year: "Report year", year_hint: "2025: 15/12/2024 to 14/12/2025",
    format: "Format", download: "Download the report", downloaded: "Downloaded {name}", again: "Save {name} again",
    kind: "Kind", item: "Item", started: "Started", ended: "Ended", by: "By", outcome: "Outcome",
    actor: "Who", action: "Action", target: "Target", remote: "From", detail: "Detail",
    prev: "‹ Previous", next: "Next ›", page_of: "{from}–{to} of {total}", whole_province: "Whole province",
  },
};

function dateInput(name, value) { return h("input", { name, type: "date", value }); }
function isoDay(d) { return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`; }
// A local date as the start of that day in the browser's zone, in Unix seconds (the API takes both).
function dayStart(value) { return value ? new Date(`${value}T00:00`).getTime() / 1000 : null; }

// One paged log: rows are fetched a page at a time with the range; prev/next move the offset.
function pagedLog(id, path, headers, row) {
  const box = h("div", { id, class: "paged-log" });
  let offset = 0, range = {};
  async function load() {
    const query = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    if (range.from) query.set("from", String(range.from));
    if (range.to) query.set("to", String(range.to));
    try {
      const found = await api("GET", `${path}?${query}`);
      const prev = h("button", { type: "button", class: "secondary", dataset: { action: "prev" }, disabled: offset === 0,
        onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, t("prev"));
      const next = h("button", { type: "button", class: "secondary", dataset: { action: "next" }, disabled: offset + PAGE >= found.total,
        onclick: () => { offset += PAGE; load(); } }, t("next"));
      const shown = t("page_of", { from: found.total ? offset + 1 : 0, to: Math.min(found.total, offset + found.items.length), total: found.total });
      clear(box).append(table(headers, found.items.map(row)),
        h("div", { class: "buttons pager" }, prev, h("span", { class: "muted", dataset: { total: found.total } }, shown), next));
    } catch (exc) {
      clear(box);
      showError(box, exc);
    }
  }
  box.show = (r) => { range = r; offset = 0; return load(); };
  return box;
}

export default {
  strings,
  async render(root, ctx) {
    const today = new Date();
    const weekAgo = new Date(today.getTime() - 7 * 86400000);
    const from = dateInput("from", ctx.params.from || isoDay(weekAgo));
    const to = dateInput("to", ctx.params.to || isoDay(today));
    const broadcasts = pagedLog("broadcast-log", "/api/v1/broadcasts",
      [t("started"), t("ended"), t("channel"), t("kind"), t("item"), t("by"), t("outcome")],
      (b) => h("tr", { dataset: { id: b.id } }, h("td", {}, fmtTime(b.started_at)), h("td", {}, fmtTime(b.ended_at)),
        h("td", {}, b.channel), h("td", {}, b.kind), h("td", {}, b.item), h("td", {}, b.started_by), h("td", {}, b.outcome || "…")));
    const audit = pagedLog("audit-log", "/api/v1/audit",
      [t("when"), t("actor"), t("action"), t("target"), t("zone"), t("remote"), t("detail")],
      (a) => h("tr", { dataset: { id: a.id } }, h("td", {}, fmtTime(a.at)), h("td", {}, a.actor), h("td", {}, a.action),
        h("td", {}, a.target), h("td", {}, a.zone ? zoneName(a.zone) : "—"), h("td", {}, a.remote || "—"), h("td", { class: "detail" }, a.detail || "")));
    const rangeForm = h("form", { class: "card row", id: "log-range" }, field(t("from"), from), field(t("to"), to),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, t("show"))));
    const showRange = () => {
      // "to" is the whole day it names: the start of the next day, exclusive.
      const end = dayStart(to.value);
      const range = { from: dayStart(from.value), to: end === null ? null : end + 86400 };
      return Promise.all([broadcasts.show(range), audit.show(range)]);
    };
    rangeForm.addEventListener("submit", (event) => { event.preventDefault(); showRange(); });

    // --- the yearly report ---
    const thisYear = today.getMonth() === 11 && today.getDate() >= 15 ? today.getFullYear() + 1 : today.getFullYear();
    const year = h("input", { name: "year", type: "number", min: 2000, max: 2100, value: thisYear });
    const format = select("format", [["xlsx", "Excel (XLSX)"], ["csv", "CSV"]], "xlsx");
    // The province (admins), or one of the districts and communes the caller sees.
    const areas = Object.keys(zoneTree.names).filter((z) => ["district", "commune", "ward"].includes(zoneTree.kinds[z]) && inZones(z));
    const options = [...(state.session.role === "admin" ? [["", t("whole_province")]] : []), ...areas.map((z) => [z, zoneName(z)])];
    const zone = select("zone", options, options[0]?.[0] ?? "");
    const saved = h("div", { id: "report-file" });
    const yearly = h("form", { class: "card", id: "yearly-form" }, h("h2", {}, t("yearly")),
      h("div", { class: "row" }, field(t("year"), year, t("year_hint")), field(t("format"), format), field(t("zone"), zone)),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", dataset: { action: "download" } }, t("download"))), saved);
    yearly.addEventListener("submit", async (event) => {
      event.preventDefault();
      const query = new URLSearchParams({ year: year.value, format: format.value });
      if (zone.value) query.set("zone", zone.value);
      const name = `report-${year.value}${zone.value ? `-${zone.value}` : ""}.${format.value}`;
      try {
        const blob = await api("GET", `/api/v1/reports/yearly?${query}`, undefined, { blob: true });
        const url = URL.createObjectURL(blob);
        ctx.onLeave(() => URL.revokeObjectURL(url));
        const link = h("a", { href: url, download: name, class: "button secondary", dataset: { bytes: blob.size, format: format.value } }, t("again", { name }));
        clear(saved).append(link);
        link.click();  // the browser saves it
        toast(t("downloaded", { name }));
      } catch (exc) {
        clear(saved);
        showError(yearly, exc);
      }
    });

    root.append(h("h1", {}, t("title")), rangeForm, h("h2", {}, t("broadcasts")), broadcasts,
      h("h2", {}, t("audit")), audit, yearly);
    await showRange();
  },
};
