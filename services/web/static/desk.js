// @ts-check
// The agent's desk: the call, a badge per coach, the cue panel. Nothing here can unmute a
// coach: the agent may only silence one (the server refuses an agent's unmute anyway).

import { CuePanel } from "./cues.js";
import { peekClaims, roleRefusal, takeCredentials } from "./link.js";
import { LiveChannel, roomPath } from "./live_channel.js";
import { Leg } from "./leg.js";
import { runCallControls } from "./call_controls.js";
import { $, RECONNECTING, announce, el, needLink, setStatus, show } from "./ui.js";

/** @typedef {import("./link.js").Credentials} Credentials */
/** @typedef {import("./live_channel.js").AgentView} AgentView */
/** @typedef {import("./live_channel.js").CoachBadge} CoachBadge */

const credentials = takeCredentials();
const refusal = credentials && roleRefusal("agent", peekClaims(credentials.token).role);
if (!credentials) needLink("agent");
else if (refusal) setStatus(refusal);
else start(credentials);

/**
 * @param {CoachBadge} coach
 * @param {LiveChannel} channel
 */
function badge(coach, channel) {
  const state = coach.audible
    ? "active"
    : coach.muted
      ? "silenced"
      : coach.whispering
        ? "ready"
        : "idle";
  const words = {
    active: "you hear this coach now",
    silenced: "silenced: only the coach can unmute",
    ready: "whisper on, not audible",
    idle: "in the call, not whispering",
  };
  const item = el(
    "li",
    { class: `badge ${state}`, "data-coach": coach.subject },
    el("span", { class: "badge-name", text: coach.name }),
    coach.audible ? el("span", { class: "whisper-active", text: "Whisper active" }) : null,
    el("span", { class: "badge-state", text: words[state] }),
  );
  if (coach.whispering && !coach.muted) {
    const silence = el("button", { type: "button", class: "quiet", text: "Silence" });
    silence.setAttribute("aria-label", `Silence ${coach.name}`);
    silence.addEventListener("click", () => channel.command({ command: "mute_coach", coach: coach.subject }));
    item.append(silence);
  }
  return item;
}

/**
 * What changed in who the agent hears, in words: the badges redraw on every view, silently.
 * @param {Map<string, string>} before subject → name of each coach the agent heard
 * @param {CoachBadge[]} coaches
 */
function whisperNews(before, coaches) {
  const now = new Map(coaches.filter((c) => c.audible).map((c) => [c.subject, c.name]));
  const started = [...now].filter(([subject]) => !before.has(subject));
  const stopped = [...before].filter(([subject]) => !now.has(subject));
  const news = [
    ...started.map(([, name]) => `${name} is whispering to you.`),
    ...stopped.map(([, name]) => `${name} stopped whispering.`),
  ];
  return { now, news };
}

/** @param {Credentials} credentials */
function start(credentials) {
  const channel = new LiveChannel(roomPath(credentials.room), credentials.token);
  const cues = new CuePanel($("#cue-panel"), (cueId) =>
    channel.command({ command: "acknowledge_cue", cue_id: cueId }),
  );
  $("#room").textContent = `Room ${credentials.room}`;
  /** @type {Map<string, string>} subject → name of each coach the agent hears now */
  let audible = new Map();
  const leg = new Leg(credentials);
  runCallControls(channel, leg, "agent", (/** @type {AgentView} */ view, call) => {
    const customer = view.customer;
    show($("#customer"), Boolean(customer));
    if (customer) $("#customer").textContent = `Customer: ${customer.name}`;
    if (view.closed) setStatus("The call has ended.");
    else if (call.reconnecting) setStatus(RECONNECTING);
    else if (!call.joined) setStatus("Ready. Join the call to take it.");
    else if (!call.onCall) setStatus("Connecting the call…");
    else if (!customer) setStatus("In the call. Waiting for the customer…");
    else setStatus("On the call.");
    $("#coaches").replaceChildren(...view.coaches.map((coach) => badge(coach, channel)));
    show($("#no-coaches"), view.coaches.length === 0);
    document.body.classList.toggle("whispering", view.coaches.some((coach) => coach.audible));
    const { now, news } = whisperNews(audible, view.coaches);
    if (news.length) announce(news.join(" "));
    audible = now;
    cues.draw(view.cues);
  });
}
