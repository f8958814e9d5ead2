// @ts-check
// The live channel: one WebSocket per page, at /rooms/{room}/live (roomPath) or /lobby/live.
// The token goes in the first message, never in the URL. Everything a page shows comes from
// the server's `view` (or `lobby`) messages; an `ack` only says a command was taken, an
// `error` says why not. A socket that drops is opened again, backing off up to 10 s, unless its
// close code says that retrying cannot help; with the newest `resume` token, if it was given one.

import { Backoff } from "./backoff.js";

// The messages' shapes, as the server sends them (services/web/live_channel.py, lobby_socket.py
// and projections/views.py): what the pages may rely on.

/** @typedef {{subject: string, name: string}} Person */
/** @typedef {"push_to_talk" | "open_mic"} CoachMode */

/**
 * What the agent sees of a coach.
 * @typedef {object} CoachBadge
 * @property {string} subject
 * @property {string} name
 * @property {boolean} whispering
 * @property {boolean} muted
 * @property {boolean} audible the agent hears this coach now
 */

/**
 * What supervisors see of each coach.
 * @typedef {object} CoachView
 * @property {string} subject
 * @property {string} name
 * @property {boolean} can_whisper
 * @property {boolean} monitoring
 * @property {boolean} whispering
 * @property {CoachMode} mode
 * @property {boolean} talking
 * @property {boolean} muted
 * @property {boolean} muted_by_agent the agent muted them, not they themself
 * @property {boolean} audible
 */

/**
 * @typedef {object} CueView
 * @property {string} cue_id
 * @property {string} coach
 * @property {string} coach_name
 * @property {string} text
 * @property {boolean} acknowledged
 */

/**
 * @typedef {object} CustomerView
 * @property {"customer"} type
 * @property {string} room_id
 * @property {Person} you
 * @property {Person | null} agent
 * @property {boolean} closed
 */

/**
 * @typedef {object} AgentView
 * @property {"agent"} type
 * @property {string} room_id
 * @property {Person} you
 * @property {Person | null} customer
 * @property {CoachBadge[]} coaches
 * @property {CueView[]} cues
 * @property {boolean} closed
 */

/**
 * @typedef {object} SupervisorView
 * @property {"supervisor"} type
 * @property {string} room_id
 * @property {number} version
 * @property {Person} you
 * @property {Person | null} customer
 * @property {Person | null} agent
 * @property {CoachView[]} coaches
 * @property {CueView[]} cues
 * @property {"separate_track" | "excluded"} recording
 * @property {boolean} closed
 */

/** @typedef {CustomerView | AgentView | SupervisorView} RoomView */

/**
 * A room as the supervisors' lobby lists it.
 * @typedef {object} LiveRoom
 * @property {string} room_id
 * @property {string} queue
 * @property {string | null} customer
 * @property {string | null} agent
 * @property {string[]} coaches
 * @property {string[]} coaching the coaches whispering now
 * @property {string} opened_at ISO 8601
 */

/**
 * @typedef {object} Hello
 * @property {"hello"} type
 * @property {"customer" | "agent" | "supervisor"} role
 * @property {string[]} receive_slots one WHEP track per slot, in this order
 * @property {string} [opened_at] to supervisors only: when the room's first event was stored
 * @property {IceServer[]} [ice_servers] TURN servers, with credentials minted for this page
 * @property {"all" | "relay"} [ice_transport_policy] relay: through the TURN servers only
 */
/** @typedef {{urls: string[], username: string, credential: string}} IceServer */
/**
 * To customers and agents: a token of the service's own to reconnect with (the live socket and
 * the media), at once and again before each runs out, so that the call outlives the link's.
 * @typedef {{type: "resume", token: string}} Resume
 */
/** @typedef {{type: "view", view: RoomView}} ViewMessage */
/** @typedef {{type: "lobby", rooms: LiveRoom[]}} LobbyMessage */
/** @typedef {{type: "ack", id: string, outcome: "accepted" | "unchanged"}} Ack */
/** @typedef {{type: "error", error: string, detail: string, id?: string}} ErrorMessage */
/** @typedef {Hello | ViewMessage | LobbyMessage | Ack | ErrorMessage | Resume} ServerMessage */

/**
 * The commands the pages send (projections/commands.py has them all).
 * @typedef {{command: "start_monitor" | "stop_monitor" | "start_whisper" | "stop_whisper"}
 *   | {command: "press_talk" | "release_talk"}
 *   | {command: "set_coach_mode", mode: CoachMode}
 *   | {command: "mute_coach" | "unmute_coach", coach?: string}
 *   | {command: "send_cue", cue_id: string, text: string}
 *   | {command: "acknowledge_cue", cue_id: string}} Command
 */

/**
 * A LiveChannel's events: each server message under its type, and the channel's own.
 * @typedef {object} LiveChannelEvents
 * @property {CustomEvent<Hello>} hello
 * @property {CustomEvent<ViewMessage>} view
 * @property {CustomEvent<LobbyMessage>} lobby
 * @property {CustomEvent<Ack>} ack
 * @property {CustomEvent<Resume>} resume the channel reconnects with it from now on
 * @property {CustomEvent<ErrorMessage>} error also for a command sent while offline
 * @property {CustomEvent<number>} offline the delay (ms) before the next try
 * @property {CustomEvent<string>} fatal what to tell the user: retrying cannot help
 */

/**
 * EventTarget, with listeners typed by LiveChannelEvents (as the DOM's are for a WebSocket).
 * @typedef {new () => {
 *   addEventListener<K extends keyof LiveChannelEvents>(
 *     type: K, listener: (event: LiveChannelEvents[K]) => void): void
 * } & EventTarget} ChannelTarget
 */

const FATAL = new Map([
  [4400, "This link names a room that cannot exist."],
  [4401, "Your access link is not valid (or has expired). Ask for a new one."],
  [4403, "Your access link is for another room."],
  [1009, "A message was too large for the server."],
]);

/** @param {string} room */
export const roomPath = (room) => `/rooms/${encodeURIComponent(room)}/live`;

export class LiveChannel extends /** @type {ChannelTarget} */ (EventTarget) {
  /**
   * @param {string} path
   * @param {string} token
   * @param {Record<number, string>} [fatal] what to say for close codes of this socket, over
   *   the defaults above
   */
  constructor(path, token, fatal = {}) {
    super();
    this.path = path;
    this.token = token;
    /** @type {[number, string][]} */
    const extra = Object.entries(fatal).map(([code, text]) => [Number(code), text]);
    this.fatal = new Map([...FATAL, ...extra]);
    /** @type {WebSocket | null} */
    this.socket = null;
    this.sent = 0;
    this.backoff = new Backoff();
    this.stopped = false;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}${this.path}`;
    const socket = (this.socket = new WebSocket(url));
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "auth", token: this.token }));
    });
    socket.addEventListener("message", (event) => {
      /** @type {ServerMessage} */
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      // Data from the room (or lobby) means connected again; a hello alone may precede a
      // close for an unavailable store, and must not reset the back-off.
      if (message.type === "view" || message.type === "lobby") this.backoff.reset();
      if (message.type === "resume") this.token = message.token;
      this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket || this.stopped) return;
      const fatal = this.fatal.get(event.code);
      if (fatal) {
        this.dispatchEvent(new CustomEvent("fatal", { detail: fatal }));
        return;
      }
      const wait = this.backoff.next();
      this.dispatchEvent(new CustomEvent("offline", { detail: wait }));
      setTimeout(() => this.connect(), wait);
    });
  }

  get open() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  /**
   * Sends a command ({command: "press_talk", ...}); returns its id, or null when offline.
   * @param {Command} command
   * @returns {string | null}
   */
  command(command) {
    if (!this.open) {
      this.dispatchEvent(
        new CustomEvent("error", {
          detail: { error: "offline", detail: "Not connected: trying again shortly." },
        }),
      );
      return null;
    }
    const id = `c${++this.sent}`;
    /** @type {WebSocket} */ (this.socket).send(JSON.stringify({ type: "command", id, command }));
    return id;
  }

  close() {
    this.stopped = true;
    this.socket?.close(1000);
  }
}
