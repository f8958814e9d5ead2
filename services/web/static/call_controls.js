// @ts-check
// What the customer's page and the agent's desk share: a call leg whose buttons (#join,
// #mute, #hangup) follow the room's views and the leg's connections. Each page draws the rest
// of its view itself, told where the call stands.

import { keepCredentials, roleRefusal } from "./link.js";
import { $, RECONNECTING, alertUser, setStatus, show } from "./ui.js";

/** @typedef {import("./leg.js").Leg} Leg */
/** @typedef {import("./link.js").Role} Role */
/** @typedef {import("./live_channel.js").LiveChannel} LiveChannel */
/** @typedef {import("./live_channel.js").CustomerView} CustomerView */
/** @typedef {import("./live_channel.js").AgentView} AgentView */

/**
 * Where the call stands, for the page to put in words.
 * @typedef {object} CallState
 * @property {boolean} joined in the call: joined, not hung up (even while reconnecting)
 * @property {boolean} onCall both media connections are up
 * @property {boolean} reconnecting the media or the live socket was lost and is being made again
 * @property {boolean} hungUp the user hung up (and has not joined again)
 */

/**
 * @template {CustomerView | AgentView} V the view of the page's role, which its token decides
 * @param {LiveChannel} channel
 * @param {Leg} leg
 * @param {Role} role the page's role: a hello for another role stops the page
 * @param {(view: V, call: CallState) => void} drawView
 */
export function runCallControls(channel, leg, role, drawView) {
  /** @type {V | null} */
  let view = null;
  let online = true; // the live socket: false from a drop until views come again
  let hungUp = false;
  /** @type {string | null} why views stopped for good (a fatal close, a link of another role) */
  let stopped = null;
  const join = /** @type {HTMLButtonElement} */ ($("#join"));

  const draw = () => {
    const joined = leg.joined;
    show(join, !joined);
    join.disabled = !leg.slots || Boolean(view?.closed);
    show($("#mute"), joined);
    show($("#hangup"), joined);
    const mutedMic = joined && !leg.micOpen;
    $("#mute").setAttribute("aria-pressed", String(mutedMic));
    $("#mute").textContent = mutedMic ? "Unmute my microphone" : "Mute my microphone";
    const reconnecting = !online || leg.status === "reconnecting" || leg.status === "checking";
    if (stopped !== null) setStatus(stopped);
    else if (view) drawView(view, { joined, onCall: leg.connected, reconnecting, hungUp });
    else if (reconnecting) setStatus(RECONNECTING);
  };

  channel.addEventListener("hello", (event) => {
    const refusal = roleRefusal(role, event.detail.role);
    if (refusal) {
      stopped = refusal; // before any slot: nothing can be joined
      channel.close();
    } else {
      leg.greeted(event.detail);
    }
    draw();
  });
  channel.addEventListener("view", (event) => {
    view = /** @type {V} */ (event.detail.view);
    online = true;
    if (view.closed) leg.hangUp({ ended: true });
    draw();
  });
  channel.addEventListener("resume", (event) => {
    leg.renew(event.detail.token); // the call outlives the link's token
    keepCredentials(leg.credentials); // and so does a reload of the page
  });
  channel.addEventListener("error", (event) => alertUser(event.detail.detail));
  channel.addEventListener("offline", () => {
    online = false;
    leg.suspect(); // what held the socket may have held the media
    draw();
  });
  channel.addEventListener("fatal", (event) => {
    stopped = event.detail; // the call's media, if joined, goes on until hung up
    draw();
  });
  leg.addEventListener("change", draw);
  leg.addEventListener("failed", (event) => {
    alertUser(`The call was lost: ${/** @type {CustomEvent<string>} */ (event).detail}`);
  });

  join.addEventListener("click", async () => {
    join.disabled = true;
    hungUp = false;
    setStatus("Connecting your microphone…");
    try {
      await leg.join();
      draw();
      $("#mute").focus(); // the Join button is gone: focus the next control, not the page
    } catch (error) {
      // An Error: a DOMException from getUserMedia or WebRTC, or the leg's own.
      alertUser(`Could not join the call: ${/** @type {Error} */ (error).message}`);
      draw();
      join.focus();
    }
  });
  $("#mute").addEventListener("click", () => {
    leg.micOpen = !leg.micOpen;
    draw();
  });
  $("#hangup").addEventListener("click", () => {
    hungUp = true;
    leg.hangUp();
    draw();
    join.focus();
  });
  addEventListener("pagehide", () => leg.hangUp());
  channel.connect();
}
