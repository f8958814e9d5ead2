// @ts-check
// The console's lobby, for a supervisor's `*` token: the live rooms of the queues it allows,
// each with its customer, agent, how long it has been open and who is coaching, pushed by the
// server over /lobby/live whenever it changes. "Open" takes this tab into that room's console
// with the same token (kept in sessionStorage, never in a URL the server sees).

import { keepCredentials, peekClaims } from "./link.js";
import { LiveChannel } from "./live_channel.js";
import { $, RECONNECTING, duration, el, setStatus, setText, show } from "./ui.js";

/** @typedef {import("./link.js").Credentials} Credentials */
/** @typedef {import("./live_channel.js").LiveRoom} LiveRoom */

/** @param {LiveRoom} room */
function coachesText(room) {
  if (room.coaches.length === 0) return "nobody";
  const coaching = new Set(room.coaching);
  return room.coaches
    .map((name) => (coaching.has(name) ? `${name} (whispering)` : `${name} (listening)`))
    .join(", ");
}

/**
 * One row per room, kept across updates (keyed by room id) so that the keyboard focus on an
 * "Open" button survives them.
 * @param {LiveRoom} room
 * @param {(roomId: string) => void} open
 */
function roomRow(room, open) {
  const button = el("button", { type: "button", class: "primary", text: "Open" });
  button.setAttribute("aria-label", `Open room ${room.room_id}`);
  button.addEventListener("click", () => open(room.room_id));
  return el(
    "tr",
    { "data-room": room.room_id },
    el("th", { scope: "row", text: room.room_id }),
    el("td", { "data-field": "queue" }),
    el("td", { "data-field": "customer" }),
    el("td", { "data-field": "agent" }),
    el("td", { "data-field": "open-for", class: "numeric" }),
    el("td", { "data-field": "coaches" }),
    el("td", {}, button),
  );
}

/** @param {Credentials} credentials a `*` token's */
export function startLobby(credentials) {
  const claims = peekClaims(credentials.token);
  /** @type {Map<string, {row: HTMLTableRowElement, openedAt: number}>} by room id */
  const rows = new Map();
  const body = $("#rooms");
  const channel = new LiveChannel("/lobby/live", credentials.token, {
    4403: "Your access link does not open the room list.",
  });

  show($("#lobby"), true);
  show($("#room-console"), false);
  document.title = "Supervisor console: live rooms";
  const queues = Array.isArray(claims.queues) ? claims.queues : [];
  $("#lobby-queues").textContent = queues.length
    ? `Queues: ${queues.join(", ")}`
    : "Your link names no queue.";

  /** @param {string} roomId */
  const open = (roomId) => {
    channel.close();
    keepCredentials({ room: roomId, token: credentials.token });
    location.replace("/console"); // one console entry in the history: Back leaves the console
  };

  const tick = () => {
    for (const { row, openedAt } of rows.values()) {
      setText($('[data-field="open-for"]', row), duration(Date.now() - openedAt));
    }
  };

  /** @param {LiveRoom[]} rooms */
  const draw = (rooms) => {
    const seen = new Set();
    /** @type {HTMLTableRowElement | null} */
    let previous = null;
    for (const room of rooms) {
      seen.add(room.room_id);
      let entry = rows.get(room.room_id);
      if (!entry) {
        entry = { row: roomRow(room, open), openedAt: 0 };
        rows.set(room.room_id, entry);
      }
      entry.openedAt = Date.parse(room.opened_at);
      const { row } = entry;
      setText($('[data-field="queue"]', row), room.queue);
      setText($('[data-field="customer"]', row), room.customer ?? "—");
      setText($('[data-field="agent"]', row), room.agent ?? "—");
      setText($('[data-field="coaches"]', row), coachesText(room));
      row.classList.toggle("coached", room.coaching.length > 0);
      // Oldest first, as the server sends them; a row moves only when it is out of place.
      /** @type {ChildNode | null} */
      const expected = previous ? previous.nextSibling : body.firstChild;
      if (row !== expected) body.insertBefore(row, expected);
      previous = row;
    }
    for (const [roomId, { row }] of rows) {
      if (seen.has(roomId)) continue;
      row.remove();
      rows.delete(roomId);
    }
    tick();
    show($("#no-rooms"), rows.size === 0);
    show($("#rooms-table"), rows.size > 0);
    const count = rows.size === 1 ? "1 live room" : `${rows.size} live rooms`;
    setStatus(claims.name ? `Signed in as ${claims.name}: ${count}.` : `${count}.`);
  };

  // While the list cannot be kept current, it says so: greyed out, and busy for screen readers.
  /** @param {boolean} isStale */
  const stale = (isStale) => {
    $("#rooms-table").classList.toggle("stale", isStale);
    $("#rooms-table").setAttribute("aria-busy", String(isStale));
  };
  channel.addEventListener("lobby", (event) => {
    stale(false);
    draw(event.detail.rooms);
  });
  channel.addEventListener("offline", () => {
    stale(true);
    setStatus(RECONNECTING);
  });
  channel.addEventListener("fatal", (event) => {
    stale(true);
    setStatus(event.detail);
  });
  setInterval(tick, 1000);
  channel.connect();
}
