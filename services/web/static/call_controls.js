// What the customer's page and the agent's desk share: a call leg whose buttons (#join,
// #mute, #hangup) follow the room's views. Each page draws the rest of its view itself.

import { $, alertUser, setStatus, show } from "./ui.js";

export function runCall(channel, leg, drawView) {
  let view = null;

  const draw = () => {
    const joined = leg.connected;
    show($("#join"), !joined);
    $("#join").disabled = !leg.slots || view?.closed;
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
    view = event.detail.view;
    if (view.closed) leg.hangUp();
    draw();
  });
  channel.addEventListener("error", (event) => alertUser(event.detail.detail));
  channel.addEventListener("offline", () => setStatus("Connection lost: reconnecting…"));
  channel.addEventListener("fatal", (event) => setStatus(event.detail));

  $("#join").addEventListener("click", async () => {
    $("#join").disabled = true;
    setStatus("Connecting your microphone…");
    try {
      await leg.join();
    } catch (error) {
      alertUser(`Could not join the call: ${error.message}`);
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
