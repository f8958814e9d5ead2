// The customer's page: the call, and nothing else. It is drawn from the customer's view,
// which names only the customer and the agent.

import { takeCredentials } from "./link.js";
import { LiveChannel } from "./live.js";
import { Leg } from "./leg.js";
import { $, alertUser, needLink, setStatus, show } from "./ui.js";

const credentials = takeCredentials();
if (!credentials) needLink("call");
else start(credentials);

function start(credentials) {
  const channel = new LiveChannel(credentials.room, credentials.token);
  const leg = new Leg(credentials);
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
    const agent = view?.agent;
    show($("#agent"), Boolean(agent));
    if (agent) $("#agent").textContent = `You are speaking with ${agent.name}.`;
    if (!view) return;
    if (view.closed) setStatus("The call has ended. Thank you.");
    else if (!joined) setStatus("Ready. Join when you are.");
    else if (!agent) setStatus("You are in the call. Waiting for an agent…");
    else setStatus("You are connected.");
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
