// The live channel: one WebSocket per page at /rooms/{room}/live. The token goes in the first
// message, never in the URL. Everything a page shows comes from the `view` messages; an `ack`
// only says a command was taken, an `error` says why not.

const FATAL = new Map([
  [4400, "This link names a room that cannot exist."],
  [4401, "Your access link is not valid (or has expired). Ask for a new one."],
  [4403, "Your access link is for another room."],
  [1009, "A message was too large for the server."],
]);

export class LiveChannel extends EventTarget {
  constructor(room, token) {
    super();
    this.room = room;
    this.token = token;
    this.socket = null;
    this.sent = 0;
    this.retryMs = 500;
    this.stopped = false;
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/rooms/${encodeURIComponent(this.room)}/live`;
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
      if (message.type === "view") this.retryMs = 500;
      this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket || this.stopped) return;
      const fatal = FATAL.get(event.code);
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
