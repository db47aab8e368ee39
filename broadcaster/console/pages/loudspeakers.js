// Loudspeakers: the map (their lat/lon drawn on an SVG fitted to them: works offline; map tiles under
// it only when the server names a tile URL), the list (online, last heartbeat, signal, volume,
// amplifier), the volume control, registration and key rotation (the key is shown once).

import {
  api, can, clear, confirmDialog, field, fmtAgo, h, inZones, select, showError, state, t, table, toast,
  zoneName, zoneTree,
} from "/ui/core.js";

const SVG = "http://www.w3.org/2000/svg";
const MAP_W = 640, MAP_H = 400, PAD = 28, LABEL_ROOM = 90;  // room on the right for the last point's label

export default {
  strings: {
    vi: {
      title: "Cụm loa", map: "Bản đồ", list: "Danh sách", register: "Đăng ký cụm loa", id: "Mã cụm loa",
      channel: "Kênh", volume: "Âm lượng", lat: "Vĩ độ", lon: "Kinh độ", online: "Trực tuyến", offline: "Mất kết nối",
      heartbeat: "Tín hiệu gần nhất", signal: "Sóng", amplifier: "Tăng âm", amp_on: "Bật", amp_off: "Tắt",
      set_volume: "Đặt", rotate: "Đổi khóa", rotate_confirm: "Đổi khóa của cụm loa {id}? Khóa cũ hết hiệu lực ngay; cụm loa phải được cài khóa mới.",
      key_once: "Khóa của cụm loa {id} (chỉ hiện một lần — hãy chép ngay vào thiết bị):", no_position: "{n} cụm loa chưa có tọa độ",
      volume_set: "Đã đặt âm lượng {v} cho {id}", registered: "Đã đăng ký {id}", state: "Trạng thái",
      no_map: "Chưa có cụm loa nào có tọa độ", position_hint: "Tùy chọn: để vẽ lên bản đồ",
    },
    en: {
      title: "Loudspeakers", map: "Map", list: "List", register: "Register a loudspeaker", id: "Loudspeaker id",
      channel: "Channel", volume: "Volume", lat: "Latitude", lon: "Longitude", online: "Online", offline: "Offline",
      heartbeat: "Last heartbeat", signal: "Signal", amplifier: "Amplifier", amp_on: "On", amp_off: "Off",
      set_volume: "Set", rotate: "New key", rotate_confirm: "Give loudspeaker {id} a new key? The old one stops working at once; the device needs the new one.",
      key_once: "The key of loudspeaker {id} (shown only once — copy it into the device now):", no_position: "{n} loudspeakers have no position",
      volume_set: "Volume {v} set for {id}", registered: "Registered {id}", state: "State",
      no_map: "No loudspeaker has a position yet", position_hint: "Optional: to draw it on the map",
    },
  },

  async render(root, ctx) {
    root.append(h("h1", {}, t("title")));
    const keyBox = h("div", { id: "key-box" });
    const mapBox = h("div", { class: "card", id: "speaker-map" });
    const listBox = h("div", { id: "speaker-list" });
    root.append(keyBox);
    const channels = (await api("GET", "/api/v1/channels?limit=500")).items;
    root.append(h("h2", {}, t("map")), mapBox, h("h2", {}, t("list")), listBox);
    if (can("write")) root.append(registerForm(channels, keyBox, () => refresh()));

    async function refresh() {
      const speakers = await all("/api/v1/loudspeakers");
      drawMap(mapBox, speakers, ctx.session.console?.tile_url);
      drawList(listBox, speakers, keyBox, refresh);
    }
    await refresh();
    // Online state and heartbeats, every 10 s; not while someone is typing in the page.
    const timer = setInterval(() => {
      if (!root.contains(document.activeElement)) refresh().catch(() => {});
    }, 10000);
    ctx.onLeave(() => clearInterval(timer));
  },
};

async function all(path) {
  const items = [];
  for (let offset = 0; ; offset += 500) {
    const page = await api("GET", `${path}?limit=500&offset=${offset}`);
    items.push(...page.items);
    if (items.length >= page.total || !page.items.length) return items;
  }
}

function registerForm(channels, keyBox, done) {
  const hamlets = Object.keys(zoneTree.names).filter((z) => inZones(z) && can("write", z));
  const mine = channels.filter((c) => can("write", c.zone));
  const id = h("input", { name: "id", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]*", maxlength: 64 });
  const name = h("input", { name: "name", maxlength: 200 });
  const zone = select("zone", hamlets.map((z) => [z, zoneName(z)]), hamlets.find((z) => zoneTree.kinds[z] === "hamlet"));
  const channel = select("channel", mine.map((c) => [c.id, c.name]));
  const volume = h("input", { name: "volume", type: "number", min: 0, max: 100, value: "80" });
  const lat = h("input", { name: "lat", type: "number", step: "any", min: -90, max: 90 });
  const lon = h("input", { name: "lon", type: "number", step: "any", min: -180, max: 180 });
  const form = h("form", { class: "card", id: "register-speaker" },
    h("h2", {}, t("register")),
    h("div", { class: "row" }, field(t("id"), id), field(t("name"), name)),
    h("div", { class: "row" }, field(t("zone"), zone), field(t("channel"), channel), field(t("volume"), volume)),
    h("div", { class: "row" }, field(t("lat"), lat, t("position_hint")), field(t("lon"), lon)),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", "data-write": "" }, t("register"))));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { id: id.value.trim(), zone: zone.value, channel: channel.value, volume: Number(volume.value) };
    if (name.value.trim()) body.name = name.value.trim();
    if (lat.value !== "") body.lat = Number(lat.value);
    if (lon.value !== "") body.lon = Number(lon.value);
    try {
      const made = await api("POST", "/api/v1/loudspeakers", body);
      showKey(keyBox, made.id, made.key);
      toast(t("registered", { id: made.id }));
      form.reset();
      await done();
    } catch (exc) {
      showError(form, exc);
    }
  });
  return form;
}

function showKey(box, id, key) {
  clear(box).append(h("div", { class: "warning key-once", role: "alert" },
    h("p", {}, t("key_once", { id })), h("code", { class: "key", dataset: { speaker: id } }, key),
    h("div", { class: "buttons" }, h("button", { type: "button", class: "secondary", onclick: () => clear(box) }, t("close")))));
  box.scrollIntoView({ block: "nearest" });
}

// ---- the map: Web Mercator in a box fitted to the points; tiles under it only if configured ----

function mercator(lat, lon) {
  const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return [(lon + 180) / 360, 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)];
}

function drawMap(box, speakers, tileUrl) {
  clear(box);
  const placed = speakers.filter((s) => s.lat !== null && s.lat !== undefined && s.lon !== null && s.lon !== undefined);
  if (!placed.length) {
    box.append(h("p", { class: "muted" }, t("no_map")));
    return;
  }
  const pts = placed.map((s) => ({ s, xy: mercator(s.lat, s.lon) }));
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const { xy: [x, y] } of pts) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const span = Math.max(x1 - x0, (y1 - y0) * (MAP_W / MAP_H), 1e-5);  // one point alone: a small box around it
  const scale = Math.min((MAP_W - 2 * PAD - LABEL_ROOM) / Math.max(x1 - x0, 1e-5), (MAP_H - 2 * PAD) / Math.max(y1 - y0, 1e-5),
    (MAP_W - 2 * PAD) / span);
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const px = (x) => (MAP_W - LABEL_ROOM) / 2 + (x - cx) * scale, py = (y) => MAP_H / 2 + (y - cy) * scale;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${MAP_W} ${MAP_H}`);
  svg.setAttribute("class", "speaker-map");
  svg.setAttribute("role", "img");
  svg.append(el("rect", { x: 0, y: 0, width: MAP_W, height: MAP_H, class: "map-bg" }));
  if (tileUrl) tiles(svg, tileUrl, scale, px, py, cx, cy);
  for (const { s, xy: [x, y] } of pts) {
    const g = el("g", { class: `map-point ${s.online ? "online" : "offline"}`, "data-speaker": s.id });
    g.append(el("circle", { cx: px(x), cy: py(y), r: 7 }));
    const label = el("text", { x: px(x) + 10, y: py(y) + 4 });
    label.textContent = s.name || s.id;
    const title = el("title", {});
    title.textContent = `${s.id} · ${s.online ? t("online") : t("offline")} · ${s.lat}, ${s.lon}`;
    g.append(label, title);
    svg.append(g);
  }
  box.append(svg, h("div", { class: "map-legend" },
    h("span", { class: "badge online" }, "● ", t("online")), " ", h("span", { class: "badge offline" }, "● ", t("offline")),
    placed.length < speakers.length ? h("small", { class: "muted" }, " ", t("no_position", { n: speakers.length - placed.length })) : null));
}

function tiles(svg, url, scale, px, py, cx, cy) {
  // The zoom whose 256-px tiles are about as big as drawn here; the tiles that cover the box.
  const z = Math.max(0, Math.min(19, Math.round(Math.log2(scale / 256))));
  const n = 2 ** z, size = scale / n;
  const left = cx - (MAP_W - LABEL_ROOM) / 2 / scale, top = cy - MAP_H / 2 / scale;  // the inverse of px, py at 0
  for (let tx = Math.floor(left * n); tx <= Math.floor((left + MAP_W / scale) * n); tx++) {
    for (let ty = Math.floor(top * n); ty <= Math.floor((top + MAP_H / scale) * n); ty++) {
      if (ty < 0 || ty >= n) continue;
      const image = el("image", { x: px(tx / n), y: py(ty / n), width: size, height: size, class: "map-tile" });
      image.setAttribute("href", url.replace("{z}", z).replace("{x}", ((tx % n) + n) % n).replace("{y}", ty));
      svg.append(image);
    }
  }
}

function el(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

// ---- the list --------------------------------------------------------------------------------

function drawList(box, speakers, keyBox, refresh) {
  const rows = speakers.map((s) => {
    const st = s.status || {};
    const writable = can("write", s.zone);
    const volume = h("input", { type: "number", min: 0, max: 100, value: String(s.volume), class: "volume-input",
      "aria-label": t("volume"), name: "volume" });
    const cells = [
      h("td", {}, h("strong", {}, s.id), s.name ? h("div", { class: "muted" }, s.name) : null),
      h("td", {}, zoneName(s.zone), h("div", { class: "muted" }, s.channel)),
      h("td", {}, h("span", { class: `badge ${s.online ? "online" : "offline"}` }, s.online ? t("online") : t("offline"))),
      h("td", {}, fmtAgo(s.last_heartbeat)),
      h("td", {}, st.signal_dbm === undefined || st.signal_dbm === null ? "—" : `${st.signal_dbm} dBm`),
      h("td", { class: "volume-cell" }, writable ? h("form", { class: "inline", dataset: { speaker: s.id },
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            await api("PATCH", `/api/v1/loudspeakers/${encodeURIComponent(s.id)}`, { volume: Number(volume.value) });
            toast(t("volume_set", { v: volume.value, id: s.id }));
            await refresh();
          } catch (exc) { showError(box, exc); }
        } }, volume, h("button", { type: "submit", class: "secondary", "data-write": "", dataset: { action: "volume" } }, t("set_volume")))
        : String(s.volume),
      st.volume !== undefined && st.volume !== null && st.volume !== s.volume ? h("div", { class: "muted" }, `(${st.volume})`) : null),
      h("td", {}, st.amp === undefined || st.amp === null ? "—" : st.amp ? t("amp_on") : t("amp_off")),
      h("td", {}, writable ? h("button", { type: "button", class: "secondary", "data-write": "", dataset: { action: "rotate", id: s.id },
        onclick: async () => {
          if (!(await confirmDialog(t("rotate"), t("rotate_confirm", { id: s.id }), t("rotate"), true))) return;
          try {
            const made = await api("POST", `/api/v1/loudspeakers/${encodeURIComponent(s.id)}/rotate-key`);
            showKey(keyBox, made.id, made.key);
          } catch (exc) { showError(box, exc); }
        } }, t("rotate")) : null),
    ];
    return h("tr", { dataset: { speaker: s.id, online: String(s.online) } }, cells);
  });
  clear(box).append(table([t("id"), t("zone"), t("state"), t("heartbeat"), t("signal"), t("volume"), t("amplifier"), t("actions")], rows));
}
