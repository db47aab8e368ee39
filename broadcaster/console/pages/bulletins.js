// Bulletins: the list by state, writing one (text and/or media, class, validity, zones, when it plays),
// hearing its text read aloud before anyone approves it, submitting it, and approving or rejecting it
// with a reason. The approver sees what changed since the last approval (the server's `changes`), and a
// refusal (the four-eyes rule, a state that does not allow it) is the server's own message, shown in place.

import {
  api, can, clear, confirmDialog, field, fmtTime, h, inZones, isoLocal, localInput, select, showError, state,
  t, table, toast, zoneName, zoneTree,
} from "/ui/core.js";

const STATES = ["draft", "submitted", "approved", "rejected", "scheduled", "played", "expired", "withdrawn"];
const CLASSES = ["thong-thuong", "uu-tien", "khan-cap"];
const WEEKDAYS = { vi: ["T2", "T3", "T4", "T5", "T6", "T7", "CN"], en: ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"] };

const strings = {
  vi: {
    title: "Bản tin", write: "Viết bản tin", state: "Trạng thái", klass: "Loại", next: "Lần phát tới",
    state_draft: "Bản nháp", state_submitted: "Chờ duyệt", state_approved: "Đã duyệt", state_rejected: "Bị từ chối",
    state_scheduled: "Đã lên lịch", state_played: "Đã phát", state_expired: "Hết hạn", state_withdrawn: "Đã rút",
    "class_thong-thuong": "Thông thường", "class_uu-tien": "Ưu tiên", "class_khan-cap": "Khẩn cấp",
    headline: "Tiêu đề", summary: "Tóm tắt (bảng tin điện tử)", text: "Nội dung đọc (chuyển văn bản thành giọng nói)",
    media: "Tệp âm thanh (thay cho đọc văn bản)", no_media: "— không dùng tệp —", category: "Lĩnh vực",
    language: "Ngôn ngữ", valid_from: "Hiệu lực từ", valid_until: "Hiệu lực đến", zones_hint: "Giữ Ctrl (hoặc chạm) để chọn nhiều vùng",
    plan: "Lịch phát", times: "Giờ phát hằng ngày", times_hint: "Ví dụ: 06:30, 17:00", at: "Phát một lần lúc",
    weekdays: "Chỉ các ngày", asap: "Phát ngay khi được duyệt", repeat: "Số lần mỗi lượt", gap: "Nghỉ giữa các lần (giây)",
    submit_now: "Gửi duyệt ngay", save_draft: "Lưu", preview: "Nghe thử", previewing: "Đang đọc thử…",
    submit: "Gửi duyệt", approve: "Duyệt", reject: "Từ chối", withdraw: "Rút bản tin", reason: "Lý do",
    reject_title: "Từ chối bản tin", withdraw_title: "Rút bản tin", withdraw_body: "Bản tin sẽ không phát nữa (và dừng nếu đang phát).",
    changes: "Thay đổi so với bản đã duyệt", field: "Mục", approved_value: "Đã duyệt", now_value: "Hiện nay",
    plays: "Các lần phát", outcome: "Kết quả", created: "Tạo bởi", approved_by: "Duyệt bởi", warnings: "Lưu ý",
    saved: "Đã lưu bản tin", submitted: "Đã gửi duyệt", approved: "Đã duyệt", rejected: "Đã từ chối",
    withdrawn: "Đã rút", version: "Phiên bản", all_states: "Mọi trạng thái", open: "Mở",
    loudspeakers: "Loa trực tuyến / xác nhận", reason_shown: "Lý do từ chối",
  },
  en: {
    title: "Bulletins", write: "Write a bulletin", state: "State", klass: "Class", next: "Next play",
    state_draft: "Draft", state_submitted: "Awaiting approval", state_approved: "Approved", state_rejected: "Rejected",
    state_scheduled: "Scheduled", state_played: "Played", state_expired: "Expired", state_withdrawn: "Withdrawn",
    "class_thong-thuong": "Normal", "class_uu-tien": "Priority", "class_khan-cap": "Emergency",
    headline: "Title", summary: "Summary (e-boards)", text: "Text read aloud (text to speech)",
    media: "Audio file (instead of reading the text)", no_media: "— no file —", category: "Category",
    language: "Language", valid_from: "Valid from", valid_until: "Valid until", zones_hint: "Hold Ctrl (or tap) to pick several zones",
    plan: "When it plays", times: "Times every day", times_hint: "e.g. 06:30, 17:00", at: "Once at",
    weekdays: "Only on", asap: "Play as soon as approved", repeat: "Plays per slot", gap: "Gap between plays (s)",
    submit_now: "Submit for approval now", save_draft: "Save", preview: "Listen", previewing: "Reading…",
    submit: "Submit", approve: "Approve", reject: "Reject", withdraw: "Withdraw", reason: "Reason",
    reject_title: "Reject the bulletin", withdraw_title: "Withdraw the bulletin", withdraw_body: "It will not play again (and stops if on air).",
    changes: "Changed since it was approved", field: "Field", approved_value: "Approved", now_value: "Now",
    plays: "Plays", outcome: "Outcome", created: "Written by", approved_by: "Approved by", warnings: "Note",
    saved: "Bulletin saved", submitted: "Submitted", approved: "Approved", rejected: "Rejected",
    withdrawn: "Withdrawn", version: "Version", all_states: "Every state", open: "Open",
    loudspeakers: "Loudspeakers online / acknowledged", reason_shown: "Why it was rejected",
  },
};

function badge(kind, label) { return h("span", { class: `badge ${kind}` }, label); }
function stateBadge(s) { return h("span", { class: `badge state-${s}`, dataset: { state: s } }, t(`state_${s}`)); }
function classBadge(k) { return badge(k, t(`class_${k}`)); }

// The zones the caller may write bulletins for, for a <select multiple>.
function zonePicker(selected = []) {
  const ids = Object.keys(zoneTree.names).filter((z) => inZones(z));
  const picker = h("select", { name: "zones", multiple: true, size: Math.min(6, Math.max(3, ids.length)) },
    ids.map((z) => h("option", { value: z, selected: selected.includes(z) }, zoneName(z))));
  return picker;
}

function picked(selectEl) { return Array.from(selectEl.selectedOptions).map((o) => o.value); }

// An Ogg/Opus blob played in the page; the object URL is freed when the page is left.
function playBlob(container, blob, ctx) {
  container.querySelectorAll("audio").forEach((a) => a.remove());
  const url = URL.createObjectURL(blob);
  ctx.onLeave(() => URL.revokeObjectURL(url));
  const audio = h("audio", { controls: true, src: url, class: "bulletin-preview", dataset: { bytes: blob.size } });
  container.append(audio);
  audio.play().catch(() => { /* the listener presses play */ });
}

async function listPage(root, ctx) {
  const wanted = ctx.params.state || "";
  const states = select("state", [["", t("all_states")], ...STATES.map((s) => [s, t(`state_${s}`)])], wanted);
  states.addEventListener("change", () => { location.hash = states.value ? `#/bulletins?state=${states.value}` : "#/bulletins"; });
  const head = h("div", { class: "buttons page-head" }, h("h1", {}, t("title")),
    can("bulletin.create") ? h("a", { href: "#/bulletins/new", class: "button primary", id: "bulletin-write", "data-write": "" }, t("write")) : null);
  const body = h("div", {}, h("p", { class: "loading" }, t("loading")));
  root.append(head, field(t("state"), states), body);
  try {
    const found = await api("GET", `/api/v1/bulletins?limit=200${wanted ? `&state=${wanted}` : ""}`);
    const rows = found.items.map((b) => h("tr", { dataset: { id: b.id } },
      h("td", {}, h("a", { href: `#/bulletins/${b.id}`, dataset: { action: "open", id: b.id } }, b.title)),
      h("td", {}, classBadge(b.class)), h("td", {}, stateBadge(b.state)),
      h("td", {}, b.zones.map(zoneName).join(", ")),
      h("td", {}, b.next.length ? fmtTime(b.next[0]) : "—")));
    clear(body).append(table([t("headline"), t("klass"), t("state"), t("zones"), t("next")], rows));
  } catch (exc) {
    showError(body, exc);
  }
}

function planFields(plan = {}) {
  const times = h("input", { name: "times", value: (plan.times || []).join(", "), placeholder: "06:30, 17:00" });
  const at = h("input", { name: "at", type: "datetime-local", value: plan.at?.[0] ? plan.at[0].slice(0, 16) : "" });
  const days = WEEKDAYS[state.lang] || WEEKDAYS.vi;
  const weekdays = h("div", { class: "weekdays" }, days.map((d, i) => h("label", {},
    h("input", { type: "checkbox", name: "weekday", value: String(i), checked: (plan.weekdays || []).includes(i) }), " ", d)));
  const asap = h("input", { type: "checkbox", name: "asap", checked: Boolean(plan.asap) });
  const repeat = h("input", { name: "repeat", type: "number", min: 1, max: 10, value: plan.repeat || 1 });
  const gap = h("input", { name: "gap_s", type: "number", min: 0, max: 7200, value: plan.gap_s || 0 });
  const box = h("fieldset", { class: "plan" }, h("legend", {}, t("plan")),
    h("div", { class: "row" }, field(t("times"), times, t("times_hint")), field(t("at"), at)),
    h("div", { class: "field" }, h("span", { class: "label" }, t("weekdays")), weekdays),
    h("label", { class: "check" }, asap, " ", t("asap")),
    h("div", { class: "row" }, field(t("repeat"), repeat), field(t("gap"), gap)));
  box.read = () => {
    const plan = {
      times: times.value.split(/[,\s]+/).filter(Boolean),
      at: at.value ? [at.value] : [],
      weekdays: Array.from(weekdays.querySelectorAll("input:checked")).map((c) => Number(c.value)),
      asap: asap.checked, repeat: Number(repeat.value) || 1, gap_s: Number(gap.value) || 0,
    };
    return plan;
  };
  return box;
}

async function editPage(root, ctx, existing) {
  root.append(h("p", {}, h("a", { href: "#/bulletins" }, "← ", t("title"))), h("h1", {}, existing ? `${t("edit")}: ${existing.title}` : t("write")));
  let media = [], voices = [];
  try { media = (await api("GET", "/api/v1/media?limit=500")).items; } catch { /* no media list: text only */ }
  try { voices = (await api("GET", "/api/v1/speech/languages")).languages.map((l) => l.language); } catch { /* typed in */ }
  const b = existing || { plan: {}, zones: [], class: "thong-thuong", language: "vi" };
  const title = h("input", { name: "title", required: true, maxlength: 200, value: b.title || "" });
  const summary = h("input", { name: "summary", maxlength: 1000, value: b.summary || "" });
  const text = h("textarea", { name: "text", maxlength: 20000 }, b.text || "");
  const mediaSel = select("media", [["", t("no_media")], ...media.map((m) => [m.id, `${m.title} (${Math.round(m.duration_s)} s)`])], b.media || "");
  const category = h("input", { name: "category", maxlength: 64, value: b.category || "", placeholder: "thoi-tiet" });
  const klass = select("class", CLASSES.map((c) => [c, t(`class_${c}`)]), b.class);
  // The languages the server can read aloud (a bulletin in another plays only as media).
  const wanted = b.language || "vi";
  const language = voices.length
    ? select("language", [...new Set([...voices, wanted])].map((l) => [l, l]), wanted)
    : h("input", { name: "language", value: wanted, maxlength: 35 });
  const from = h("input", { name: "valid_from", type: "datetime-local", value: b.valid_from ? localInput(b.valid_from) : "" });
  const until = h("input", { name: "valid_until", type: "datetime-local", value: b.valid_until ? localInput(b.valid_until) : "" });
  const zones = zonePicker(b.zones);
  const plan = planFields(b.plan);
  const submitNow = h("input", { type: "checkbox", name: "submit" });
  const listen = h("div", { class: "preview-box" });
  const previewButton = h("button", { type: "button", class: "secondary", dataset: { action: "preview-text" } }, t("preview"));
  previewButton.addEventListener("click", async () => {
    previewButton.disabled = true;
    previewButton.textContent = t("previewing");
    try {
      const blob = await api("POST", "/api/v1/speech/preview", { text: text.value, language: language.value }, { blob: true });
      playBlob(listen, blob, ctx);
    } catch (exc) {
      showError(listen, exc);
    } finally {
      previewButton.disabled = false;
      previewButton.textContent = t("preview");
    }
  });
  const form = h("form", { class: "card bulletin-form", id: "bulletin-form" },
    field(t("headline"), title), field(t("summary"), summary), field(t("text"), text),
    h("div", { class: "buttons" }, previewButton), listen,
    h("div", { class: "row" }, field(t("media"), mediaSel), field(t("category"), category)),
    h("div", { class: "row" }, field(t("klass"), klass), field(t("language"), language)),
    h("div", { class: "row" }, field(t("valid_from"), from), field(t("valid_until"), until)),
    field(t("zones"), zones, t("zones_hint")), plan,
    existing ? null : h("label", { class: "check" }, submitNow, " ", t("submit_now")),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", "data-write": "" }, t("save_draft")),
      h("a", { href: existing ? `#/bulletins/${existing.id}` : "#/bulletins", class: "button secondary" }, t("cancel"))));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      title: title.value, summary: summary.value, text: text.value, media: mediaSel.value || null,
      category: category.value, class: klass.value, language: language.value,
      valid_from: isoLocal(from.value), valid_until: isoLocal(until.value), zones: picked(zones), plan: plan.read(),
    };
    try {
      const saved = existing
        ? await api("PUT", `/api/v1/bulletins/${existing.id}`, { ...body, version: existing.version })
        : await api("POST", "/api/v1/bulletins", { ...body, submit: submitNow.checked });
      toast(t("saved"));
      location.hash = `#/bulletins/${saved.id}`;
    } catch (exc) {
      showError(form, exc);
      form.scrollIntoView();
    }
  });
  root.append(form);
}

function show(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

async function detailPage(root, ctx, id) {
  const b = await api("GET", `/api/v1/bulletins/${encodeURIComponent(id)}`);
  const actions = h("div", { class: "buttons", id: "bulletin-actions" });
  const box = h("div", { class: "card bulletin", dataset: { id: b.id, state: b.state } },
    h("div", { class: "buttons" }, classBadge(b.class), stateBadge(b.state), h("span", { class: "muted" }, `${t("version")} ${b.version}`)),
    b.summary ? h("p", { class: "summary" }, b.summary) : null,
    b.text ? h("p", { class: "bulletin-text" }, b.text) : null,
    h("dl", { class: "facts" },
      h("dt", {}, t("zones")), h("dd", {}, b.zones.map(zoneName).join(", ")),
      h("dt", {}, t("created")), h("dd", {}, `${b.created_by} · ${fmtTime(b.created_at)}`),
      b.approved_by ? [h("dt", {}, t("approved_by")), h("dd", {}, `${b.approved_by} · ${fmtTime(b.approved_at)}`)] : null,
      h("dt", {}, t("valid_from")), h("dd", {}, fmtTime(b.valid_from)),
      h("dt", {}, t("valid_until")), h("dd", {}, fmtTime(b.valid_until)),
      h("dt", {}, t("next")), h("dd", {}, b.next.length ? b.next.map(fmtTime).join(" · ") : "—"),
      b.reason ? [h("dt", {}, t("reason_shown")), h("dd", { class: "reason" }, b.reason)] : null),
    b.warnings.length ? h("p", { class: "warning" }, `${t("warnings")}: ${b.warnings.join("; ")}`) : null,
    actions);
  root.append(h("p", {}, h("a", { href: "#/bulletins" }, "← ", t("title"))), h("h1", {}, b.title), box);
  const changes = Object.entries(b.changes || {});
  if (changes.length) {
    root.append(h("h2", {}, t("changes")), h("div", { id: "bulletin-changes" }, table([t("field"), t("approved_value"), t("now_value")],
      changes.map(([name, c]) => h("tr", { dataset: { field: name } }, h("td", {}, name), h("td", {}, show(c.approved)), h("td", {}, show(c.now)))))));
  }
  const listen = h("div", { class: "preview-box" });
  box.append(listen);

  const zones = b.zones;
  const mayCreate = zones.every((z) => can("bulletin.create", z));
  const mayApprove = zones.every((z) => can("bulletin.approve", z));
  const act = (action, label, kind, run) => h("button", { type: "button", class: kind, "data-write": "", dataset: { action, id: b.id },
    onclick: async () => {
      try {
        const result = await run();
        if (result === false) return;
        toast(t(result || action));
        ctx.reload();
      } catch (exc) {
        showError(box, exc);
      }
    } }, label);
  if (b.text && (mayCreate || mayApprove)) {
    actions.append(h("button", { type: "button", class: "secondary", dataset: { action: "preview", id: b.id }, onclick: async (event) => {
      event.target.disabled = true;
      try { playBlob(listen, await api("GET", `/api/v1/bulletins/${b.id}/preview`, undefined, { blob: true }), ctx); }
      catch (exc) { showError(listen, exc); }
      finally { event.target.disabled = false; }
    } }, t("preview")));
  }
  if (mayCreate && ["draft", "rejected"].includes(b.state)) {
    actions.append(act("submit", t("submit"), "primary", async () => { await api("POST", `/api/v1/bulletins/${b.id}/submit`); return "submitted"; }));
  }
  if (mayApprove && b.state === "submitted") {
    actions.append(act("approve", t("approve"), "primary", async () => { await api("POST", `/api/v1/bulletins/${b.id}/approve`); return "approved"; }));
    actions.append(act("reject", t("reject"), "danger", async () => {
      const reason = h("textarea", { name: "reason", maxlength: 1000, id: "reject-reason" });
      if (!await confirmDialog(t("reject_title"), field(t("reason"), reason), t("reject"), true)) return false;
      await api("POST", `/api/v1/bulletins/${b.id}/reject`, { reason: reason.value });
      return "rejected";
    }));
  }
  if (mayCreate && ["draft", "submitted", "approved", "rejected", "scheduled"].includes(b.state)) {
    actions.append(h("a", { href: `#/bulletins/${b.id}/edit`, class: "button secondary", "data-write": "", dataset: { action: "edit" } }, t("edit")));
  }
  if ((mayCreate || mayApprove) && ["submitted", "approved", "scheduled"].includes(b.state)) {
    actions.append(act("withdraw", t("withdraw"), "danger", async () => {
      const reason = h("input", { name: "reason", maxlength: 1000 });
      if (!await confirmDialog(t("withdraw_title"), [h("p", {}, t("withdraw_body")), field(t("reason"), reason)], t("withdraw"), true)) return false;
      await api("POST", `/api/v1/bulletins/${b.id}/withdraw`, { reason: reason.value });
      return "withdrawn";
    }));
  }
  try {
    const plays = await api("GET", `/api/v1/bulletins/${b.id}/plays`);
    if (plays.items.length) {
      root.append(h("h2", {}, t("plays")), h("div", { id: "bulletin-plays" }, table([t("when"), t("channel"), t("outcome"), t("loudspeakers")],
        plays.items.map((p) => h("tr", { dataset: { channel: p.channel } }, h("td", {}, fmtTime(p.started_at)), h("td", {}, p.channel),
          h("td", {}, p.outcome || "…"), h("td", {}, `${p.online ?? "—"} / ${p.acknowledged ?? "—"}`))))));
    }
  } catch { /* plays are extra */ }
}

export default {
  strings,
  async render(root, ctx) {
    const [id, sub] = ctx.rest;
    if (id === "new") return editPage(root, ctx, null);
    if (id && sub === "edit") return editPage(root, ctx, await api("GET", `/api/v1/bulletins/${encodeURIComponent(id)}`));
    if (id) return detailPage(root, ctx, id);
    return listPage(root, ctx);
  },
};
