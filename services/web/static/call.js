// @ts-check
// The customer's page: the call, and nothing else. It is drawn from the customer's view,
// which names only the customer and the agent.

import { peekClaims, roleRefusal, takeCredentials } from "./link.js";
import { LiveChannel, roomPath } from "./live_channel.js";
import { Leg } from "./leg.js";
import { runCallControls } from "./call_controls.js";
import { $, RECONNECTING, needLink, setStatus, show } from "./ui.js";

/** @typedef {import("./link.js").Credentials} Credentials */
/** @typedef {import("./live_channel.js").CustomerView} CustomerView */
/** @typedef {import("./call_controls.js").CallState} CallState */

const credentials = takeCredentials();
const refusal = credentials && roleRefusal("customer", peekClaims(credentials.token).role);
if (!credentials) needLink("call");
else if (refusal) setStatus(refusal);
else start(credentials);

/** @param {Credentials} credentials */
function start(credentials) {
  const channel = new LiveChannel(roomPath(credentials.room), credentials.token);
  /**
   * @param {CustomerView} view
   * @param {CallState} call
   */
  const drawView = (view, call) => {
    const agent = view.agent;
    // Who they speak with, only while they do: not before joining, after hanging up or the end.
    const speaking = Boolean(agent) && call.onCall && !view.closed;
    show($("#agent"), speaking);
    if (agent && speaking) $("#agent").textContent = `You are speaking with ${agent.name}.`;
    if (view.closed) setStatus("The call has ended. Thank you.");
    else if (call.reconnecting) setStatus(RECONNECTING);
    else if (call.hungUp) setStatus("You left the call. Join again if you need to.");
    else if (!call.joined) setStatus("Ready. Join when you are.");
    else if (!call.onCall) setStatus("Connecting your call…");
    else if (!agent) setStatus("You are in the call. Waiting for an agent…");
    else setStatus("You are connected.");
  };
  runCallControls(channel, new Leg(credentials), "customer", drawView);
}
