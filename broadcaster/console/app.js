// The console's shell: sign-in, the menu, and the hash router that loads one page module at a
// time from /ui/pages/<id>.js. A page module exports default
//   { title: {vi, en}, strings: {vi: {...}, en: {...}}, visible(session) -> bool, render(root, ctx) }
// and may register clean-up (an EventSource, a timer, a microphone) with ctx.onLeave(fn).

import {
  api, ApiFailure, clear, errorBox, field, h, onUnauthenticated, setLanguage, state, t, toast, zoneTree,
} from "/ui/core.js";

// The menu, in the order a commune officer's day needs it. `admin`: shown to admins only.
const PAGES = [
  { id: "overview", vi: "Tổng quan", en: "Overview" },
  { id: "live", vi: "Phát trực tiếp", en: "Go live" },
  { id: "bulletins", vi: "Bản tin", en: "Bulletins" },
  { id: "schedule", vi: "Lịch phát", en: "Schedule" },
  { id: "media", vi: "Thư viện", en: "Media" },
  { id: "alerts", vi: "Cảnh báo khẩn", en: "Alerts" },
  { id: "relays", vi: "Tiếp sóng", en: "Relays" },
  { id: "loudspeakers", vi: "Cụm loa", en: "Loudspeakers" },
  { id: "monitor", vi: "Nghe kiểm tra", en: "Monitor" },
  { id: "reports", vi: "Báo cáo & nhật ký", en: "Reports & logs" },
  { id: "users", vi: "Người dùng", en: "Users", admin: true },
];

const app = document.getElementById("app");
let leaving = [];

function route() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [id, ...rest] = path.split("/");
  return { id: id || "overview", rest, params: Object.fromEntries(new URLSearchParams(query)) };
}

function leave() {
  for (const fn of leaving.splice(0)) {
    try { fn(); } catch (exc) { console.error("clean-up failed", exc); }
  }
}

async function start() {
  setLanguage(state.lang);
  onUnauthenticated(() => {
    if (state.session) toast(t("session_ended"), "warn");
    state.session = null;
    leave();
    showSignIn();
  });
  try {
    state.session = await api("GET", "/api/v1/session", undefined, { quiet: true });
  } catch (exc) {
    if (!(exc instanceof ApiFailure) || exc.status !== 401) {
      clear(app).append(errorBox(exc));
      return;
    }
  }
  if (state.session) await enter();
  else showSignIn();
}

function languageButton() {
  return h("button", { type: "button", class: "link lang", dataset: { action: "language" }, onclick: () => {
    setLanguage(state.lang === "vi" ? "en" : "vi");
    if (state.session) enter(); else showSignIn();
  } }, t("language"));
}

function showSignIn() {
  state.page = null;
  const name = h("input", { name: "name", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "card signin", id: "signin" },
    h("h1", {}, t("signin_title")),
    field(t("user"), name), field(t("password"), password),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, t("signin")), languageButton()));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll(".error").forEach((e) => e.remove());
    try {
      state.session = await api("POST", "/api/v1/session", { name: name.value, password: password.value }, { quiet: true });
      await enter();
    } catch (exc) {
      form.prepend(errorBox(exc.status === 401 ? new Error(t("signin_failed")) : exc));
      password.value = "";
      password.focus();
    }
  });
  clear(app).append(h("main", { class: "centered" }, form));
  name.focus();
}

function showChangePassword(forced) {
  const current = h("input", { name: "current", type: "password", autocomplete: "current-password", required: true });
  const fresh = h("input", { name: "new", type: "password", autocomplete: "new-password", minlength: 8, required: true });
  const form = h("form", { class: "card", id: "password-form" },
    h("h1", {}, t("change_password")),
    forced ? h("p", { class: "warning", role: "alert" }, t("must_change")) : null,
    field(t("current_password"), current), field(t("new_password"), fresh),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, t("save")),
      forced ? h("button", { type: "button", class: "secondary", onclick: signOut }, t("signout"))
        : h("a", { href: "#/overview", class: "button secondary" }, t("cancel"))));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    form.querySelectorAll(".error").forEach((e) => e.remove());
    try {
      await api("POST", "/api/v1/me/password", { current: current.value, new: fresh.value });
      state.session = await api("GET", "/api/v1/session");
      toast(t("password_changed"));
      location.hash = "#/overview";
      await enter();
    } catch (exc) {
      form.prepend(errorBox(exc));
    }
  });
  return form;
}

async function signOut() {
  leave();
  try { await api("DELETE", "/api/v1/session"); } catch { /* signed out either way */ }
  state.session = null;
  showSignIn();
}

async function loadZones() {
  try {
    const zones = await api("GET", "/api/v1/zones");
    for (const z of zones.items || zones) {
      zoneTree.parents[z.id] = z.parent;
      zoneTree.names[z.id] = z.name;
      zoneTree.kinds[z.id] = z.kind;
    }
  } catch (exc) {
    console.warn("zones not loaded", exc);
  }
}

function visiblePages() {
  return PAGES.filter((p) => !p.admin || state.session?.role === "admin");
}

async function enter() {
  leave();
  const s = state.session;
  const main = h("main", { id: "page" });
  const nav = h("nav", { id: "menu", class: "menu" },
    visiblePages().map((p) => h("a", { href: `#/${p.id}`, dataset: { page: p.id } }, p[state.lang] || p.vi)));
  const toggle = h("button", { type: "button", class: "menu-toggle", "aria-controls": "menu", "aria-expanded": "false",
    onclick: () => { const open = nav.classList.toggle("open"); toggle.setAttribute("aria-expanded", String(open)); } },
  "☰ ", t("menu"));
  const header = h("header", { class: "top" },
    toggle,
    h("span", { class: "brand" }, h("img", { src: "/ui/icon.svg", alt: "", class: "brand-icon" }),
      state.lang === "vi" ? "Truyền thanh cơ sở" : "Commune radio"),
    h("span", { class: "who", id: "who" }, s.name, " · ", t(`role_${s.role}`)),
    h("a", { href: "#/password", class: "link", dataset: { action: "password" } }, t("change_password")),
    languageButton(),
    h("button", { type: "button", class: "link", id: "signout", onclick: signOut }, t("signout")));
  clear(app).append(header, h("div", { class: "layout" }, nav, main));
  if (s.must_change_password) {
    nav.hidden = true;
    main.append(showChangePassword(true));
    return;
  }
  if (!Object.keys(zoneTree.names).length) await loadZones();
  await show(main, nav);
}

async function show(main = document.getElementById("page"), nav = document.getElementById("menu")) {
  if (!state.session || !main) return;
  leave();
  nav?.classList.remove("open");
  const { id, rest, params } = route();
  nav?.querySelectorAll("a").forEach((a) => a.classList.toggle("active", a.dataset.page === id));
  clear(main);
  if (id === "password") {
    main.append(showChangePassword(false));
    return;
  }
  const entry = visiblePages().find((p) => p.id === id);
  if (!entry) {
    location.hash = "#/overview";
    return;
  }
  let module;
  try {
    module = (await import(`/ui/pages/${id}.js`)).default;
  } catch (exc) {
    console.error(exc);
    state.page = null;
    main.append(h("h1", {}, entry[state.lang] || entry.vi), h("p", { class: "muted" }, t("page_missing")));
    return;
  }
  state.page = module;
  document.title = `${entry[state.lang] || entry.vi} · Broadcaster`;
  const root = h("section", { class: `page page-${id}`, dataset: { page: id } });
  main.append(root);
  const ctx = { session: state.session, params, rest, onLeave: (fn) => leaving.push(fn), reload: () => show() };
  try {
    await module.render(root, ctx);
  } catch (exc) {
    console.error(exc);
    root.append(errorBox(exc));
  }
}

window.addEventListener("hashchange", () => show());
start();
