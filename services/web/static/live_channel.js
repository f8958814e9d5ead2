// The live channel: one WebSocket per page, at /rooms/{room}/live (roomPath) or /lobby/live.
// The token goes in the first message, never in the URL. Everything a page shows comes from
// the server's `view` (or `lobby`) messages; an `ack` only says a command was taken, an
// `error` says why not. A socket that drops is opened again, backing off up to 10 s, unless its
// close code says that retrying cannot help.

const FATAL = new Map([
  [4400, "This link names a room that cannot exist."],
  [4401, "Your access link is not valid (or has expired). Ask for a new one."],
  [4403, "Your access link is for another room."],
  [1009, "A message was too large for the server."],
]);

export const roomPath = (room) => `/rooms/${encodeURIComponent(room)}/live`;

export class LiveChannel extends EventTarget {
  // `fatal`: what to say for close codes of this socket, over the defaults above.
  constructor(path, token, fatal = {}) {
    super();
    this.path = path;
    this.token = token;
    const extra = Object.entries(fatal).map(([code, text]) => [Number(code), text]);
    this.fatal = new Map([...FATAL, ...extra]);
    this.socket = null;
    this.sent = 0;
    this.retryMs = 500;
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
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      // Data from the room (or lobby) means connected again; a hello alone may precede a
      // close for an unavailable store, and must not reset the back-off.
      if (message.type === "view" || message.type === "lobby") this.retryMs = 500;
      this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket || this.stopped) return;
      const fatal = this.fatal.get(event.code);
      if (fatal) {
        this.dispatchEvent(new CustomEvent("fatal", { detail: fatal }));
        return;
      }
      this.dispatchEvent(new CustomEvent("offline", { detail: this.retryMs }));
      setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 10_000);
    });
  }

  get open() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  // Sends a command ({command: "press_talk", ...}); returns its id, or null when offline.
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
    this.socket.send(JSON.stringify({ type: "command", id, command }));
    return id;
  }

  close() {
    this.stopped = true;
    this.socket?.close(1000);
  }
}
