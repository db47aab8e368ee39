// The console's shared parts: the API client (cookie + CSRF), translations, DOM building,
// dialogs and small formatters. Every page module imports from here and from nowhere else.
// The page never holds the session's secret: it is an HttpOnly cookie; the page holds only
// the CSRF value the server derives from it, sent on every write.

export const state = { session: null, lang: localStorage.getItem("lang") || "vi", page: null };

// ---- translations ------------------------------------------------------------------------
// Common words here; each page brings its own (page.strings). Vietnamese first, English beside.
const COMMON = {
  vi: {
    save: "Lưu", cancel: "Hủy", delete: "Xóa", edit: "Sửa", create: "Tạo mới", close: "Đóng", confirm: "Xác nhận",
    yes: "Có", no: "Không", loading: "Đang tải…", none: "Không có", error: "Lỗi", saved: "Đã lưu",
    signin: "Đăng nhập", signout: "Đăng xuất", user: "Tên đăng nhập", password: "Mật khẩu",
    signin_title: "Đăng nhập hệ thống truyền thanh", signin_failed: "Sai tên đăng nhập hoặc mật khẩu",
    change_password: "Đổi mật khẩu", current_password: "Mật khẩu hiện tại", new_password: "Mật khẩu mới (ít nhất 8 ký tự)",
    must_change: "Mật khẩu này do người khác đặt (mật khẩu mẫu hoặc được cấp lại). Hãy đổi mật khẩu trước khi dùng.",
    password_changed: "Đã đổi mật khẩu", zone: "Vùng", zones: "Vùng", channel: "Kênh", channels: "Kênh",
    status: "Trạng thái", when: "Thời gian", from: "Từ", to: "Đến", search: "Tìm", refresh: "Làm mới",
    not_allowed: "Bạn không có quyền làm việc này", session_ended: "Phiên đăng nhập đã hết; hãy đăng nhập lại",
    page_missing: "Trang này chưa có trong bản cài đặt này", network_error: "Không kết nối được máy chủ",
    language: "English", menu: "Danh mục", role_admin: "Quản trị", role_operator: "Vận hành", role_viewer: "Xem",
    all: "Tất cả", name: "Tên", actions: "Thao tác", details: "Chi tiết", back: "Quay lại",
  },
  en: {
    save: "Save", cancel: "Cancel", delete: "Delete", edit: "Edit", create: "New", close: "Close", confirm: "Confirm",
    yes: "Yes", no: "No", loading: "Loading…", none: "None", error: "Error", saved: "Saved",
    signin: "Sign in", signout: "Sign out", user: "User name", password: "Password",
    signin_title: "Sign in to the broadcast system", signin_failed: "Wrong user name or password",
    change_password: "Change password", current_password: "Current password", new_password: "New password (at least 8 characters)",
    must_change: "This password was set by someone else (the demo's, or a reset). Change it before going on.",
    password_changed: "Password changed", zone: "Zone", zones: "Zones", channel: "Channel", channels: "Channels",
    status: "Status", when: "When", from: "From", to: "To", search: "Search", refresh: "Refresh",
    not_allowed: "You may not do this", session_ended: "The session has ended; sign in again",
    page_missing: "This page is not in this installation", network_error: "Cannot reach the server",
    language: "Tiếng Việt", menu: "Menu", role_admin: "Admin", role_operator: "Operator", role_viewer: "Viewer",
    all: "All", name: "Name", actions: "Actions", details: "Details", back: "Back",
  },
};

export function t(key, vars = {}, page = state.page) {
  const lang = state.lang;
  let text = page?.strings?.[lang]?.[key] ?? COMMON[lang]?.[key] ?? page?.strings?.vi?.[key] ?? COMMON.vi[key] ?? key;
  for (const [name, value] of Object.entries(vars)) text = text.replaceAll(`{${name}}`, String(value));
  return text;
}

export function setLanguage(lang) {
  state.lang = lang;
  localStorage.setItem("lang", lang);
  document.documentElement.lang = lang;
}

// ---- the API -----------------------------------------------------------------------------

export class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const listeners = { unauthenticated: [] };
export function onUnauthenticated(fn) { listeners.unauthenticated.push(fn); }

// api("POST", "/api/v1/alerts", {...}) -> parsed JSON (null for 204); throws ApiFailure with the
// server's own code and message, which pages show in place (a clash, a refusal by name).
export async function api(method, path, body, options = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD" && state.session) headers["X-CSRF-Token"] = state.session.csrf;
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    if (options.contentType) headers["Content-Type"] = options.contentType;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let reply;
  try {
    reply = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  } catch (exc) {
    throw new ApiFailure(0, "network", t("network_error"));
  }
  return readReply(reply, options);
}

async function readReply(reply, options = {}) {
  if (reply.status === 204) return null;
  const type = reply.headers.get("content-type") || "";
  if (!reply.ok) {
    let code = "error", message = `${reply.status} ${reply.statusText}`;
    if (type.includes("json")) {
      const data = await reply.json().catch(() => null);
      if (data?.error) ({ code, message } = data.error);
    }
    if (reply.status === 401 && !options.quiet) listeners.unauthenticated.forEach((fn) => fn());
    throw new ApiFailure(reply.status, code, message);
  }
  if (options.blob) return reply.blob();
  return type.includes("json") ? reply.json() : reply.text();
}

// An upload with progress (fetch has none): onProgress(fraction) while the body goes.
export function upload(method, path, file, { contentType, onProgress } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    xhr.setRequestHeader("Accept", "application/json");
    if (state.session) xhr.setRequestHeader("X-CSRF-Token", state.session.csrf);
    xhr.setRequestHeader("Content-Type", contentType || file.type || "application/octet-stream");
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress?.(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiFailure(0, "network", t("network_error")));
    xhr.onload = () => {
      let data = null;
      try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiFailure(xhr.status, data?.error?.code || "error", data?.error?.message || xhr.statusText));
    };
    xhr.send(file);
  });
}

// ---- who may do what (the server decides; this only hides buttons that would be refused) ----

export function can(action, zone) {
  const s = state.session;
  if (!s) return false;
  if (s.role === "admin") return true;
  if (action === "province") return false;
  if (action === "write" && s.role !== "operator") return false;
  if (action.startsWith("bulletin.") && !s.permissions.includes(action)) return false;
  return zone === undefined || inZones(zone);
}

// zoneParents: {zone: parent} from /api/v1/zones (loaded once by the shell).
export const zoneTree = { parents: {}, names: {}, kinds: {} };
export function inZones(zone) {
  const s = state.session;
  if (!s || s.role === "admin") return true;
  for (let z = zone, guard = 0; z && guard < 64; z = zoneTree.parents[z], guard++) {
    if (s.zones.includes(z)) return true;
  }
  return false;
}
export function zoneName(id) { return zoneTree.names[id] || id; }

// ---- DOM ---------------------------------------------------------------------------------

// h("button", {class: "primary", onclick: fn}, "Save"): text children are always text nodes,
// never parsed as markup, so nothing the server or a user wrote can become a script.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    else if (key === "checked" || key === "disabled" || key === "selected" || key === "hidden" || key === "required") el[key] = true;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) { while (el.firstChild) el.firstChild.remove(); return el; }

// A labelled form field; `input` is any element (input, select, textarea).
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", {}, hint) : null);
}

export function select(name, options, value) {
  return h("select", { name }, options.map(([v, label]) => h("option", { value: v, selected: String(v) === String(value) }, label)));
}

// A table that scrolls inside its own box, never the page (phone screens).
export function table(headers, rows) {
  return h("div", { class: "table-wrap" },
    h("table", {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, t("none"))))));
}

// The server's refusal, shown where the action was (a clash named by the server, say).
export function errorBox(err) {
  const text = err instanceof ApiFailure ? err.message : String(err?.message || err);
  return h("div", { class: "error", role: "alert", dataset: { code: err?.code || "error" } }, text);
}

export function showError(container, err) {
  container.querySelectorAll(":scope > .error").forEach((e) => e.remove());
  container.prepend(errorBox(err));
}

let toastTimer = null;
export function toast(message, kind = "ok") {
  let box = document.getElementById("toast");
  if (!box) { box = h("div", { id: "toast", role: "status" }); document.body.append(box); }
  box.className = `toast ${kind}`;
  box.textContent = message;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.className = "toast hidden"; }, 4000);
}

// A confirmation step (alerts, deletions): resolves true only on the confirm button.
export function confirmDialog(title, body, confirmLabel = t("confirm"), danger = false) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm" },
      h("h2", {}, title), h("div", { class: "dialog-body" }, body),
      h("div", { class: "buttons" },
        h("button", { type: "button", class: "secondary", onclick: () => { dialog.close(); resolve(false); } }, t("cancel")),
        h("button", { type: "button", class: danger ? "danger" : "primary", dataset: { confirm: "1" },
          onclick: () => { dialog.close(); resolve(true); } }, confirmLabel)));
    dialog.addEventListener("close", () => { dialog.remove(); resolve(false); });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// ---- time ------------------------------------------------------------------------------------

export function fmtTime(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  return new Date(seconds * 1000).toLocaleString(state.lang === "vi" ? "vi-VN" : "en-GB");
}

export function fmtAgo(seconds) {
  if (!seconds) return "—";
  const ago = Math.max(0, Date.now() / 1000 - seconds);
  if (ago < 90) return state.lang === "vi" ? `${Math.round(ago)} giây trước` : `${Math.round(ago)} s ago`;
  if (ago < 5400) return state.lang === "vi" ? `${Math.round(ago / 60)} phút trước` : `${Math.round(ago / 60)} min ago`;
  return fmtTime(seconds);
}

// <input type="datetime-local"> value <-> ISO 8601 with the browser's offset (the server takes both).
export function localInput(seconds) {
  const d = new Date((seconds ?? Date.now() / 1000) * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
export function fromLocalInput(value) { return value ? new Date(value).getTime() / 1000 : null; }
export function isoLocal(value) {
  // "2026-12-02T08:00" (the browser's local time) -> "2026-12-02T08:00:00+07:00"
  if (!value) return null;
  const d = new Date(value);
  const off = -d.getTimezoneOffset(), sign = off >= 0 ? "+" : "-", pad = (n) => String(Math.abs(n)).padStart(2, "0");
  return `${value.length === 16 ? value + ":00" : value}${sign}${pad(Math.trunc(off / 60))}:${pad(off % 60)}`;
}
