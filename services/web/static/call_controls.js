// @ts-check
// What the customer's page and the agent's desk share: a call leg whose buttons (#join,
// #mute, #hangup) follow the room's views. Each page draws the rest of its view itself.

import { $, alertUser, setStatus, show } from "./ui.js";

/** @typedef {import("./leg.js").Leg} Leg */
/** @typedef {import("./live_channel.js").LiveChannel} LiveChannel */
/** @typedef {import("./live_channel.js").CustomerView} CustomerView */
/** @typedef {import("./live_channel.js").AgentView} AgentView */

/**
 * @template {CustomerView | AgentView} V the view of the page's role, which its token decides
 * @param {LiveChannel} channel
 * @param {Leg} leg
 * @param {(view: V, joined: boolean) => void} drawView
 */
export function runCallControls(channel, leg, drawView) {
  /** @type {V | null} */
  let view = null;
  const join = /** @type {HTMLButtonElement} */ ($("#join"));

  const draw = () => {
    const joined = leg.connected;
    show(join, !joined);
    join.disabled = !leg.slots || Boolean(view?.closed);
    show($("#mute"), joined);
    show($("#hangup"), joined);
    const mutedMic = joined && !leg.micOpen;
    $("#mute").setAttribute("aria-pressed", String(mutedMic));
    $("#mute").textContent = mutedMic ? "Unmute my microphone" : "Mute my microphone";
    if (view) drawView(view, joined);
  };

  channel.addEventListener("hello", (event) => {
    leg.slots = event.detail.receive_slots;
    draw();
  });
  channel.addEventListener("view", (event) => {
    view = /** @type {V} */ (event.detail.view);
    if (view.closed) leg.hangUp();
    draw();
  });
  channel.addEventListener("error", (event) => alertUser(event.detail.detail));
  channel.addEventListener("offline", () => setStatus("Connection lost: reconnecting…"));
  channel.addEventListener("fatal", (event) => setStatus(event.detail));

  join.addEventListener("click", async () => {
    join.disabled = true;
    setStatus("Connecting your microphone…");
    try {
      await leg.join();
    } catch (error) {
      // An Error: a DOMException from getUserMedia or WebRTC, or the leg's own.
      alertUser(`Could not join the call: ${/** @type {Error} */ (error).message}`);
    }
    draw();
  });
  $("#mute").addEventListener("click", () => {
    leg.micOpen = !leg.micOpen;
    draw();
  });
  $("#hangup").addEventListener("click", () => {
    leg.hangUp();
    draw();
  });
  addEventListener("pagehide", () => leg.hangUp());
  channel.connect();
}
