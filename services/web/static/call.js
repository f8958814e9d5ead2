// @ts-check
// The customer's page: the call, and nothing else. It is drawn from the customer's view,
// which names only the customer and the agent.

import { takeCredentials } from "./link.js";
import { LiveChannel, roomPath } from "./live_channel.js";
import { Leg } from "./leg.js";
import { runCallControls } from "./call_controls.js";
import { $, needLink, setStatus, show } from "./ui.js";

/** @typedef {import("./link.js").Credentials} Credentials */
/** @typedef {import("./live_channel.js").CustomerView} CustomerView */

const credentials = takeCredentials();
if (!credentials) needLink("call");
else start(credentials);

/** @param {Credentials} credentials */
function start(credentials) {
  const channel = new LiveChannel(roomPath(credentials.room), credentials.token);
  runCallControls(channel, new Leg(credentials), (/** @type {CustomerView} */ view, joined) => {
    const agent = view.agent;
    show($("#agent"), Boolean(agent));
    if (agent) $("#agent").textContent = `You are speaking with ${agent.name}.`;
    if (view.closed) setStatus("The call has ended. Thank you.");
    else if (!joined) setStatus("Ready. Join when you are.");
    else if (!agent) setStatus("You are in the call. Waiting for an agent…");
    else setStatus("You are connected.");
  });
}
