// Users (admin): who may sign in, with what role, in which zones, with which bulletin permissions; a new
// user and a reset password must be changed at the next sign-in (the list says so); an admin revokes a
// user's API tokens one by one and ends all its console sessions at once. The server keeps the last admin
// and refuses removing oneself: its message is shown in place.

import {
  api, can, confirmDialog, field, fmtAgo, fmtTime, h, select, showError, t, table, toast, zoneName, zoneTree,
} from "/ui/core.js";

const ROLES = ["operator", "viewer", "admin"];
const PERMISSIONS = ["bulletin.create", "bulletin.approve"];

const strings = {
  vi: {
    title: "Người dùng", add: "Thêm người dùng", role: "Vai trò", permissions: "Quyền thêm",
    "perm_bulletin.create": "Viết bản tin", "perm_bulletin.approve": "Duyệt bản tin", must_change_badge: "Phải đổi mật khẩu",
    tokens: "Mã truy cập (API)", sessions: "Phiên đăng nhập", created: "Tạo lúc", first_password: "Mật khẩu ban đầu (ít nhất 8 ký tự)",
    first_hint: "Người dùng sẽ phải đổi mật khẩu khi đăng nhập lần đầu", added: "Đã thêm {name}; người này phải đổi mật khẩu khi đăng nhập",
    zones_hint: "Giữ Ctrl (hoặc chạm) để chọn nhiều vùng; quản trị không cần vùng", open: "Quản lý",
    reset: "Cấp lại mật khẩu", reset_hint: "Các phiên đăng nhập của người này kết thúc; họ phải đổi mật khẩu",
    reset_done: "Đã cấp lại mật khẩu cho {name}; họ phải đổi khi đăng nhập", end_sessions: "Đăng xuất mọi nơi",
    ended: "Đã kết thúc {n} phiên", revoke: "Thu hồi", revoked: "Đã thu hồi", label: "Ghi chú", expires: "Hết hạn",
    used: "Dùng lần cuối", remove: "Xóa người dùng", remove_title: "Xóa người dùng?",
    remove_body: "{name} sẽ không đăng nhập được nữa; mọi mã truy cập và phiên của họ kết thúc.", removed: "Đã xóa",
    back: "← Người dùng", new_password: "Mật khẩu mới (ít nhất 8 ký tự)",
  },
  en: {
    title: "Users", add: "Add a user", role: "Role", permissions: "Extra permissions",
    "perm_bulletin.create": "Write bulletins", "perm_bulletin.approve": "Approve bulletins", must_change_badge: "Must change password",
    tokens: "API tokens", sessions: "Sessions", created: "Created", first_password: "First password (at least 8 characters)",
    first_hint: "The user must change it at the first sign-in", added: "Added {name}; they must change the password at sign-in",
    zones_hint: "Hold Ctrl (or tap) to pick several zones; an admin needs none", open: "Manage",
    reset: "Reset the password", reset_hint: "The user's console sessions end; they must change it",
    reset_done: "Password of {name} reset; they must change it at sign-in", end_sessions: "Sign out everywhere",
    ended: "{n} sessions ended", revoke: "Revoke", revoked: "Revoked", label: "Label", expires: "Expires",
    used: "Last used", remove: "Remove the user", remove_title: "Remove the user?",
    remove_body: "{name} can no longer sign in; every token and session of theirs ends.", removed: "Removed",
    back: "← Users", new_password: "New password (at least 8 characters)",
  },
};

function zonePicker(selected = []) {
  const ids = Object.keys(zoneTree.names);
  return h("select", { name: "zones", multiple: true, size: Math.min(6, Math.max(3, ids.length)) },
    ids.map((z) => h("option", { value: z, selected: selected.includes(z) }, zoneName(z))));
}

function permissionChecks(granted = []) {
  const box = h("div", { class: "checks", dataset: { field: "permissions" } }, PERMISSIONS.map((p) => h("label", {},
    h("input", { type: "checkbox", name: "permission", value: p, checked: granted.includes(p) }), " ", t(`perm_${p}`))));
  box.read = () => Array.from(box.querySelectorAll("input:checked")).map((c) => c.value);
  return box;
}

function roleSelect(value) { return select("role", ROLES.map((r) => [r, t(`role_${r}`)]), value); }
function picked(el) { return Array.from(el.selectedOptions).map((o) => o.value); }

async function listPage(root) {
  const users = await api("GET", "/api/v1/users?limit=500");
  const rows = users.items.map((u) => h("tr", { dataset: { name: u.name } },
    h("td", {}, h("a", { href: `#/users/${encodeURIComponent(u.name)}`, dataset: { action: "open" } }, u.name)),
    h("td", {}, t(`role_${u.role}`)), h("td", {}, u.zones.map(zoneName).join(", ") || "—"),
    h("td", {}, u.permissions.map((p) => t(`perm_${p}`)).join(", ") || "—"),
    h("td", {}, u.must_change_password ? h("span", { class: "badge uu-tien", dataset: { flag: "must-change" } }, t("must_change_badge")) : "—"),
    h("td", { class: "num" }, String(u.tokens)), h("td", { class: "num" }, String(u.sessions))));
  root.append(h("h1", {}, t("title")), table([t("name"), t("role"), t("zones"), t("permissions"), t("status"), t("tokens"), t("sessions")], rows));

  const name = h("input", { name: "name", required: true, maxlength: 64, autocomplete: "off" });
  const role = roleSelect("operator");
  const zones = zonePicker();
  const perms = permissionChecks();
  const password = h("input", { name: "password", type: "password", minlength: 8, required: true, autocomplete: "new-password" });
  const form = h("form", { class: "card", id: "user-add" }, h("h2", {}, t("add")),
    h("div", { class: "row" }, field(t("name"), name), field(t("role"), role)),
    field(t("zones"), zones, t("zones_hint")), h("div", { class: "field" }, h("span", { class: "label" }, t("permissions")), perms),
    field(t("first_password"), password, t("first_hint")),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", "data-write": "" }, t("add"))));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const user = await api("POST", "/api/v1/users", { name: name.value, role: role.value, zones: picked(zones),
        permissions: perms.read(), password: password.value });
      toast(t("added", { name: user.name }));
      location.hash = `#/users/${encodeURIComponent(user.name)}`;
    } catch (exc) {
      showError(form, exc);
    }
  });
  root.append(form);
}

async function userPage(root, ctx, name) {
  const path = `/api/v1/users/${encodeURIComponent(name)}`;
  const user = await api("GET", path);
  const done = (message) => { toast(message); ctx.reload(); };
  const mine = user.name === ctx.session.name;
  root.append(h("p", {}, h("a", { href: "#/users" }, t("back"))),
    h("h1", {}, user.name, " ", user.must_change_password
      ? h("span", { class: "badge uu-tien", id: "must-change", dataset: { flag: "must-change" } }, t("must_change_badge")) : null),
    h("p", { class: "muted" }, `${t("created")}: ${fmtTime(user.created_at)}`));

  const role = roleSelect(user.role);
  const zones = zonePicker(user.zones);
  const perms = permissionChecks(user.permissions);
  const edit = h("form", { class: "card", id: "user-edit" }, h("h2", {}, t("edit")),
    field(t("role"), role), field(t("zones"), zones, t("zones_hint")),
    h("div", { class: "field" }, h("span", { class: "label" }, t("permissions")), perms),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", "data-write": "" }, t("save"))));
  edit.addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await api("PATCH", path, { role: role.value, zones: picked(zones), permissions: perms.read() }); done(t("saved")); }
    catch (exc) { showError(edit, exc); }
  });

  const password = h("input", { name: "password", type: "password", minlength: 8, required: true, autocomplete: "new-password" });
  const reset = h("form", { class: "card", id: "user-reset" }, h("h2", {}, t("reset")),
    h("input", { type: "text", name: "username", autocomplete: "username", value: user.name, hidden: true, readonly: true }),
    field(t("new_password"), password, t("reset_hint")),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", "data-write": "", disabled: mine }, t("reset"))));
  reset.addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await api("POST", `${path}/password`, { password: password.value }); done(t("reset_done", { name: user.name })); }
    catch (exc) { showError(reset, exc); }
  });

  const tokens = await api("GET", `/api/v1/tokens?user=${encodeURIComponent(user.name)}&limit=500`);
  const access = h("div", { class: "card", id: "user-tokens" }, h("h2", {}, `${t("tokens")} · ${t("sessions")}`),
    table([t("label"), t("created"), t("expires"), t("used"), ""], tokens.items.map((tok) => h("tr", { dataset: { id: tok.id } },
      h("td", {}, tok.label || tok.id, tok.session ? h("span", { class: "badge" }, t("sessions")) : null), h("td", {}, fmtTime(tok.created_at)), h("td", {}, fmtTime(tok.expires_at)),
      h("td", {}, fmtAgo(tok.last_used_at)),
      h("td", {}, h("button", { type: "button", class: "secondary", "data-write": "", dataset: { action: "revoke", id: tok.id },
        onclick: async () => {
          try { await api("DELETE", `/api/v1/tokens/${encodeURIComponent(tok.id)}`); done(t("revoked")); }
          catch (exc) { showError(access, exc); }
        } }, t("revoke")))))),
    h("div", { class: "buttons" }, h("button", { type: "button", class: "secondary", "data-write": "", dataset: { action: "end-sessions" },
      disabled: mine, onclick: async () => {
        try { const r = await api("DELETE", `${path}/sessions`); done(t("ended", { n: r.ended })); }
        catch (exc) { showError(access, exc); }
      } }, t("end_sessions"))));

  const remove = h("div", { class: "card", id: "user-remove" }, h("button", { type: "button", class: "danger", "data-write": "",
    dataset: { action: "remove" }, onclick: async () => {
      if (!await confirmDialog(t("remove_title"), t("remove_body", { name: user.name }), t("remove"), true)) return;
      try { await api("DELETE", path); toast(t("removed")); location.hash = "#/users"; }
      catch (exc) { showError(remove, exc); }
    } }, t("remove")));
  root.append(h("div", { class: "cards" }, edit, reset), access, remove);
}

export default {
  strings,
  async render(root, ctx) {
    if (!can("province")) {
      root.append(h("h1", {}, t("title")), h("p", { class: "muted" }, t("not_allowed")));
      return;
    }
    const [name] = ctx.rest;
    if (name) return userPage(root, ctx, decodeURIComponent(name));
    return listPage(root);
  },
};
