// @ts-check
// A supervisor's console for the room in their token: who is in the call and for how long, who
// is coaching; monitor with level meters; one click to whisper and back; push-to-talk (hold
// Space or the button) or open mic; mute; cues and their acknowledgments. What it shows comes
// from the supervisor's view only; a click sends a command and waits for the next view.
// A `*` token (one that names queues, not a room) opens the lobby of those queues' rooms
// first (lobby.js); its room console then links back to it.

import { ANY_ROOM, keepCredentials, peekClaims, roleRefusal, takeCredentials } from "./link.js";
import { LiveChannel, roomPath } from "./live_channel.js";
import { Leg } from "./leg.js";
import { startLobby } from "./lobby.js";
import { LevelMeter } from "./meter.js";
import {
  $,
  RECONNECTING,
  alertUser,
  duration,
  el,
  needLink,
  setStatus,
  setText,
  show,
} from "./ui.js";

/** @typedef {import("./link.js").Credentials} Credentials */
/** @typedef {import("./live_channel.js").CoachMode} CoachMode */
/** @typedef {import("./live_channel.js").CoachView} CoachView */
/** @typedef {import("./live_channel.js").CueView} CueView */
/** @typedef {import("./live_channel.js").SupervisorView} SupervisorView */

/**
 * What the parts of a room's console share.
 * @typedef {object} RoomConsole
 * @property {LiveChannel} channel
 * @property {Leg} leg
 * @property {SupervisorView | null} view the latest view, null until the first
 * @property {number | null} openedAt when the room opened (ms since the epoch), once known
 * @property {boolean} joining a click on Monitor is joining the room's media
 * @property {boolean} online the live socket: false from a drop until views come again
 * @property {boolean} askAgain the media was lost while whispering: the microphone stays shut
 *   until a view shows the whisper stopped (the server stops it), so only a new click reopens it
 * @property {boolean} monitoring this coach was monitoring, in the last view that had them
 *   while connected (a presence the server ended is not a choice to stop)
 * @property {boolean} resumeMonitor monitoring was on when the media was lost: listen again
 *   once it is back (a new session starts out not monitoring)
 * @property {boolean} focusNext joined by a click: move the focus on once the controls show
 * @property {string | null} stopped why the console stopped for good, if it did
 */

/** @type {Map<HTMLElement, HTMLElement>} part of the console → what had the focus in it */
const focusWhileHidden = new Map();

const credentials = takeCredentials({ anyRoom: true });
const refusal = credentials && roleRefusal("supervisor", peekClaims(credentials.token).role);
if (!credentials) needLink("supervisor", "#token=… or #room=…&token=…");
else if (refusal) setStatus(refusal);
else if (credentials.room === ANY_ROOM) startLobby(credentials);
else start(credentials);

/** @param {CoachView} coach */
function coachState(coach) {
  if (coach.audible) return "whispering — the agent hears them";
  if (coach.whispering && coach.muted_by_agent) return "whispering, muted by the agent";
  if (coach.whispering && coach.muted) return "whispering, muted";
  if (coach.whispering) return "whispering, not talking";
  if (coach.monitoring) return "monitoring";
  return "in the room";
}

/**
 * @param {CoachView} coach
 * @param {string} you this supervisor's subject
 */
function coachRow(coach, you) {
  const mode = coach.mode === "open_mic" ? "open mic" : "push-to-talk";
  const row = el(
    "tr",
    { "data-coach": coach.subject, class: coach.audible ? "audible" : "" },
    el("td", { text: coach.subject === you ? `${coach.name} (you)` : coach.name }),
    el("td", { text: coachState(coach) }),
    el("td", {
      text: coach.muted_by_agent ? `${mode}, muted by the agent` : coach.muted ? `${mode}, muted` : mode,
    }),
  );
  return row;
}

/** @param {CueView} cue */
function cueItem(cue) {
  return el(
    "li",
    { class: cue.acknowledged ? "cue done" : "cue", "data-cue": cue.cue_id },
    el("p", { class: "cue-text", text: cue.text }),
    el("p", {
      class: "cue-state",
      text: cue.acknowledged
        ? `✓ Acknowledged by the agent (sent by ${cue.coach_name})`
        : `Waiting for the agent (sent by ${cue.coach_name})`,
    }),
  );
}

/** @param {EventTarget | null} target */
function isTextField(target) {
  return target instanceof HTMLTextAreaElement ||
    (target instanceof HTMLInputElement && !["radio", "checkbox", "button"].includes(target.type)) ||
    /** @type {HTMLElement | null} */ (target)?.isContentEditable;
}

function modeRadios() {
  const radios = document.querySelectorAll('input[name="mode"]');
  return /** @type {NodeListOf<HTMLInputElement>} */ (radios);
}

/** @param {Credentials} credentials */
function start(credentials) {
  /** @type {RoomConsole} */
  const room = {
    channel: new LiveChannel(roomPath(credentials.room), credentials.token),
    leg: new Leg(credentials),
    view: null,
    openedAt: null,
    joining: false,
    online: true,
    askAgain: false,
    monitoring: false,
    resumeMonitor: false,
    focusNext: false,
    stopped: null,
  };
  /** @type {Record<string, LevelMeter>} by receive slot */
  const meters = {
    customer: new LevelMeter(/** @type {HTMLMeterElement} */ ($("#meter-customer"))),
    agent: new LevelMeter(/** @type {HTMLMeterElement} */ ($("#meter-agent"))),
  };
  $("#room").textContent = credentials.room;
  show($("#room-console"), true);
  if (peekClaims(credentials.token).room === ANY_ROOM) linkBackToLobby(credentials.token);

  const draw = () => drawConsole(room);
  setInterval(() => drawDuration(room), 1000);
  const releaseTalk = pushToTalk(room);
  /** @param {{ended?: boolean}} [options] ended: the room closed, with its sessions */
  const leave = (options = {}) => {
    releaseTalk();
    room.monitoring = room.resumeMonitor = false;
    focusWhileHidden.clear(); // the parts hide for good: focus goes where leaving puts it
    room.leg.hangUp(options);
    meters.customer.detach();
    meters.agent.detach();
  };
  followRoom(room, draw, leave, releaseTalk);
  followMedia(room, meters, draw, releaseTalk);
  monitorControls(room, meters, draw, leave);
  whisperControls(room, releaseTalk);
  cueBox(room.channel);
  addEventListener("pagehide", () => leave());
  room.channel.connect();
}

/**
 * The lobby hand-over, for a `*` token: a link back to its lobby, in this tab.
 * @param {string} token
 */
function linkBackToLobby(token) {
  const back = $("#back");
  show(back, true);
  back.addEventListener("click", (event) => {
    event.preventDefault(); // the page's pagehide handler leaves the room's media
    keepCredentials({ room: ANY_ROOM, token });
    location.replace("/console");
  });
}

/**
 * This supervisor in the latest view, if there.
 * @param {RoomConsole} room
 */
function me({ view }) {
  return view?.coaches.find((coach) => coach.subject === view.you.subject);
}

/**
 * The microphone is sent only while whispering, on a connected leg, and not after the media
 * was lost until the coach asks again. It opens at the click (so the first words are not
 * lost) and otherwise follows the view; the server decides whether anyone hears it.
 * @param {RoomConsole} room
 */
function syncMic(room) {
  const coach = me(room);
  if (coach && !coach.whispering) room.askAgain = false; // the lost whisper is over
  const live = room.leg.live && !room.askAgain;
  room.leg.micOpen = Boolean(live && coach?.whispering && !coach.muted);
}

/**
 * Monitoring again after the media came back, if it was on when it was lost: a command the
 * coach had given, sent again once both the media and the socket are up. Never a whisper.
 * @param {RoomConsole} room
 */
function resumeMonitor(room) {
  if (!room.resumeMonitor || !room.leg.connected || !room.channel.open) return;
  room.resumeMonitor = false;
  room.channel.command({ command: "start_monitor" });
}

/**
 * The leg's connections: while lost, push-to-talk is let go of and the microphone shut; the
 * leg makes new sessions by itself, and the console redraws as it goes.
 * @param {RoomConsole} room
 * @param {Record<string, LevelMeter>} meters
 * @param {() => void} draw
 * @param {(send?: boolean) => void} releaseTalk
 */
function followMedia(room, meters, draw, releaseTalk) {
  const { leg } = room;
  leg.addEventListener("change", () => {
    syncMic(room);
    draw();
  });
  leg.addEventListener("dropped", () => {
    room.askAgain = true;
    room.resumeMonitor = room.resumeMonitor || room.monitoring;
    releaseTalk(false); // the server lets go of it with the session
    leg.micOpen = false;
    meters.customer.detach();
    meters.agent.detach();
    draw();
  });
  leg.addEventListener("restored", () => resumeMonitor(room));
  leg.addEventListener("failed", (event) => {
    alertUser(`Lost the call: ${/** @type {CustomEvent<string>} */ (event).detail}`);
  });
}

/**
 * The room's messages: the hello and each view redraw the console; errors and a lost
 * connection are told to the user.
 * @param {RoomConsole} room
 * @param {() => void} draw
 * @param {(options?: {ended?: boolean}) => void} leave
 * @param {(send?: boolean) => void} releaseTalk
 */
function followRoom(room, draw, leave, releaseTalk) {
  const { channel } = room;
  channel.addEventListener("hello", (event) => {
    const refusal = roleRefusal("supervisor", event.detail.role);
    if (refusal) {
      room.stopped = refusal;
      channel.close();
      leave();
      show($("#room-console"), false);
      draw();
      return;
    }
    room.leg.greeted(event.detail);
    room.openedAt = event.detail.opened_at ? Date.parse(event.detail.opened_at) : null;
    drawDuration(room);
    draw();
  });
  channel.addEventListener("view", (event) => {
    if (room.stopped !== null && !room.leg.slots) return; // refused at the hello
    room.view = /** @type {SupervisorView} */ (event.detail.view); // a supervisor's token's
    room.online = true;
    if (!room.openedAt && room.view.version > 0) room.openedAt = Date.now();
    if (room.view.closed) leave({ ended: true });
    const coach = me(room);
    if (coach && room.leg.connected) room.monitoring = coach.monitoring;
    syncMic(room);
    resumeMonitor(room);
    draw();
  });
  channel.addEventListener("error", (event) => alertUser(event.detail.detail));
  channel.addEventListener("offline", () => {
    room.online = false;
    room.leg.suspect(); // what held the socket may have held the media
    releaseTalk(false); // the server lets go of a press made through the lost socket
    draw();
  });
  channel.addEventListener("fatal", (event) => {
    room.stopped = event.detail;
    draw();
  });
}

/**
 * How long the room has been open: at its hello, then every second.
 * @param {RoomConsole} room
 */
function drawDuration({ openedAt }) {
  $("#duration").textContent = openedAt ? duration(Date.now() - openedAt) : "—";
}

/**
 * Draws the console from the latest view.
 * @param {RoomConsole} room
 */
function drawConsole(room) {
  const { view, leg } = room;
  const reconnecting = !room.online || leg.status === "reconnecting" || leg.status === "checking";
  if (!view) {
    if (room.stopped !== null) setStatus(room.stopped);
    else if (reconnecting) setStatus(RECONNECTING);
    return;
  }
  const coach = leg.joined ? me(room) : undefined; // this supervisor, in the room's media
  drawRoom(view);
  drawMonitor(room, view, coach);
  if (coach) drawWhisper(coach, leg.live);
  drawCues(view.cues);
  if (room.stopped !== null) setStatus(room.stopped);
  else if (view.closed) setStatus("This call has ended.");
  else if (reconnecting) setStatus(RECONNECTING);
  else if (!leg.slots || leg.status === "connecting") setStatus("Connecting…");
  else setStatus(coach ? `Connected as ${view.you.name}.` : `Signed in as ${view.you.name}.`);
  if (room.focusNext && coach) {
    // Joined by a click: on to what comes next, the whisper if this coach may, not the page.
    room.focusNext = false;
    const next = coach.can_whisper ? $("#whisper") : $("#monitor");
    next.focus();
  }
}

/**
 * Who is in the call, and who is coaching: the facts, and the coaches' table.
 * @param {SupervisorView} view
 */
function drawRoom(view) {
  $("#customer").textContent = view.customer?.name ?? "—";
  $("#agent").textContent = view.agent?.name ?? "—";
  const coaching = view.coaches.filter((c) => c.whispering).map((c) => c.name);
  $("#coaching").textContent = coaching.length ? coaching.join(", ") : "nobody";
  $("#coaches").replaceChildren(...view.coaches.map((c) => coachRow(c, view.you.subject)));
  show($("#no-coaches"), view.coaches.length === 0);
}

/**
 * The Monitor and Leave buttons, and what shows once in the room's media.
 * @param {RoomConsole} room
 * @param {SupervisorView} view
 * @param {CoachView | undefined} coach this supervisor, while in the room's media
 */
function drawMonitor(room, view, coach) {
  const inRoom = coach !== undefined;
  const monitor = /** @type {HTMLButtonElement} */ ($("#monitor"));
  monitor.disabled = room.joining || view.closed || !room.leg.slots;
  // Not `disabled` while the media reconnects: that would drop the keyboard focus.
  monitor.setAttribute("aria-disabled", String(room.leg.joined && !room.leg.live));
  monitor.textContent = !inRoom ? "Join and monitor" : coach.monitoring ? "Stop monitoring" : "Monitor";
  monitor.setAttribute("aria-pressed", String(inRoom && coach.monitoring));
  showPart($("#leave"), inRoom);
  showPart($("#meters"), inRoom);
  showPart($("#coach-controls"), inRoom && coach.can_whisper);
  showPart($("#cue-section"), inRoom && coach.can_whisper); // cues need the whisper claim too
}

/**
 * Shows or hides a part of the console. What had the keyboard focus in a part that hides (the
 * coach's controls while the call reconnects, say) has it back when the part shows again,
 * unless the focus went somewhere else meanwhile.
 * @param {HTMLElement} part
 * @param {boolean} visible
 */
function showPart(part, visible) {
  const active = document.activeElement;
  if (!visible && !part.hidden && active instanceof HTMLElement && part.contains(active)) {
    focusWhileHidden.set(part, active);
  }
  show(part, visible);
  const kept = focusWhileHidden.get(part);
  if (!visible || !kept) return;
  focusWhileHidden.delete(part);
  if (!document.activeElement || document.activeElement === document.body) kept.focus();
}

/**
 * The whisper, mute, mode and talk controls, and what they add up to.
 * @param {CoachView} coach this supervisor, in the room's media
 * @param {boolean} live the media is up, as far as is known (not joining or reconnecting)
 */
function drawWhisper(coach, live) {
  const whisper = $("#whisper");
  whisper.setAttribute("aria-disabled", String(!live));
  whisper.setAttribute("aria-pressed", String(coach.whispering));
  whisper.textContent = coach.whispering ? "Stop whisper" : "Whisper";
  const mute = $("#mute");
  mute.setAttribute("aria-pressed", String(coach.muted));
  mute.textContent = coach.muted ? "Unmute" : "Mute";
  for (const radio of modeRadios()) {
    radio.checked = radio.value === coach.mode;
  }
  const ptt = coach.mode === "push_to_talk";
  const talk = /** @type {HTMLButtonElement} */ ($("#talk"));
  show(talk, ptt);
  show($("#talk-hint"), ptt);
  talk.disabled = !coach.whispering || !live;
  const talking = coach.talking && live; // a lost connection lets go of the talk button
  talk.setAttribute("aria-pressed", String(talking));
  talk.textContent = talking ? "Talking…" : "Hold to talk";
  talk.classList.toggle("on", talking);
  const state = !live
    ? "Your microphone is off until the call is back."
    : coach.audible
      ? "The agent hears you."
      : coach.whispering && coach.muted_by_agent
        ? "The agent muted you: the agent does not hear you until you unmute."
        : coach.whispering
          ? ptt ? "Whisper on: hold to talk." : "Whisper on, muted."
        : coach.monitoring ? "Monitoring: you hear the call." : "Not monitoring.";
  setText($("#me"), state);
  document.body.classList.toggle("audible", coach.audible && live);
}

/**
 * The cues sent in this room, newest first.
 * @param {CueView[]} cues
 */
function drawCues(cues) {
  $("#cues").replaceChildren(...[...cues].reverse().map(cueItem));
  show($("#no-cues"), cues.length === 0);
}

/**
 * Monitor joins the room's media (if need be) and toggles monitoring; Leave leaves it.
 * @param {RoomConsole} room
 * @param {Record<string, LevelMeter>} meters
 * @param {() => void} draw
 * @param {() => void} leave
 */
function monitorControls(room, meters, draw, leave) {
  const { channel, leg } = room;
  const monitor = $("#monitor");
  monitor.addEventListener("click", async () => {
    if (monitor.getAttribute("aria-disabled") === "true") return;
    const coach = me(room);
    if (coach && leg.joined) {
      room.resumeMonitor = false;
      channel.command({ command: coach.monitoring ? "stop_monitor" : "start_monitor" });
      return;
    }
    room.joining = true;
    draw();
    let joined = false;
    try {
      await leg.join({
        micOpen: false,
        onTrack: (slot, track) => meters[slot]?.attach(track),
      });
      channel.command({ command: "start_monitor" });
      joined = true;
    } catch (error) {
      // An Error: a DOMException from getUserMedia or WebRTC, or the leg's own.
      alertUser(`Could not join: ${/** @type {Error} */ (error).message}`);
    }
    room.joining = false;
    room.focusNext = joined; // once the controls show (drawConsole)
    draw();
    if (!joined) monitor.focus();
  });
  $("#leave").addEventListener("click", () => {
    leave();
    draw();
    monitor.focus(); // the Leave button is gone; Join and monitor is back
  });
}

/**
 * Whisper on and off, mute, and the microphone's mode.
 * @param {RoomConsole} room
 * @param {() => void} releaseTalk
 */
function whisperControls(room, releaseTalk) {
  const { channel, leg } = room;
  const whisper = $("#whisper");
  whisper.addEventListener("click", () => {
    const coach = me(room);
    if (!coach || whisper.getAttribute("aria-disabled") === "true") return;
    if (coach.whispering) {
      leg.micOpen = false;
      channel.command({ command: "stop_whisper" });
    } else {
      room.askAgain = false; // asked again
      leg.micOpen = !coach.muted;
      channel.command({ command: "start_whisper" });
    }
  });
  $("#mute").addEventListener("click", () => {
    const coach = me(room);
    if (!coach) return;
    if (!coach.muted) leg.micOpen = false;
    channel.command({ command: coach.muted ? "unmute_coach" : "mute_coach" });
  });
  for (const radio of modeRadios()) {
    radio.addEventListener("change", () => {
      releaseTalk();
      const mode = /** @type {CoachMode} */ (radio.value); // the radios' values are the modes
      channel.command({ command: "set_coach_mode", mode });
    });
  }
}

/**
 * Push-to-talk: the spacebar anywhere but in a text field, or the button (pointer or Enter).
 * Only on a connected leg, in a whisper not lost with the media: a key still held when the
 * connection comes back presses nothing (a press is a new keydown).
 * @param {RoomConsole} room
 * @returns {(send?: boolean) => void} lets go of the talk control, if it is held; send: false
 *   when the connection it went through was lost (the server lets go of it by itself)
 */
function pushToTalk(room) {
  const { channel } = room;
  let talking = false; // the talk control is held down (Space or the button)
  const talk = $("#talk");
  const pttActive = () => {
    const coach = me(room);
    const live = room.leg.live && !room.askAgain;
    return Boolean(live && coach?.whispering && coach.mode === "push_to_talk");
  };
  const pressTalk = () => {
    if (talking || !pttActive()) return;
    talking = true;
    talk.classList.add("on");
    channel.command({ command: "press_talk" });
  };
  const releaseTalk = (send = true) => {
    if (!talking) return;
    talking = false;
    talk.classList.remove("on");
    if (send) channel.command({ command: "release_talk" });
  };
  // A spacebar press push-to-talk took is its own until its keyup, whatever happens meanwhile
  // (the connection drops and the talk is let go of): its repeats and its release must not
  // scroll the page or click the focused button (Whisper, say) either.
  let spaceTaken = false;
  addEventListener("keydown", (event) => {
    if (event.code !== "Space" || isTextField(event.target)) return;
    if (!spaceTaken && !pttActive()) return;
    event.preventDefault(); // no scrolling, no button activation while talking
    if (!spaceTaken && !event.repeat) pressTalk();
    spaceTaken = true;
  });
  addEventListener("keyup", (event) => {
    if (event.code !== "Space" || !spaceTaken) return;
    spaceTaken = false;
    event.preventDefault();
    releaseTalk();
  });
  addEventListener("blur", () => {
    spaceTaken = false; // its keyup goes elsewhere
    releaseTalk(); // never leave the talk button stuck down
  });
  talk.addEventListener("pointerdown", (event) => {
    talk.setPointerCapture(event.pointerId);
    pressTalk();
  });
  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    talk.addEventListener(type, () => releaseTalk());
  }
  talk.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.repeat) pressTalk();
  });
  talk.addEventListener("keyup", (event) => event.key === "Enter" && releaseTalk());
  return releaseTalk;
}

/**
 * The cue box: Send, or Ctrl+Enter, sends its text as a cue to the agent.
 * @param {LiveChannel} channel
 */
function cueBox(channel) {
  const cueText = /** @type {HTMLTextAreaElement} */ ($("#cue-text"));
  const sendCue = () => {
    const text = cueText.value.trim();
    if (!text) return;
    const id = channel.command({ command: "send_cue", cue_id: crypto.randomUUID(), text });
    if (id) cueText.value = "";
  };
  $("#cue-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendCue();
  });
  cueText.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      sendCue();
    }
  });
}
