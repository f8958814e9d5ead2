// A supervisor's console for the room in their token: who is in the call and for how long, who
// is coaching; monitor with level meters; one click to whisper and back; push-to-talk (hold
// Space or the button) or open mic; mute; cues and their acknowledgments. What it shows comes
// from the supervisor's view only; a click sends a command and waits for the next view.
// A `*` token (one that names queues, not a room) opens the lobby of those queues' rooms
// first (lobby.js); its room console then links back to it.

import { ANY_ROOM, keepCredentials, peekClaims, takeCredentials } from "./link.js";
import { LiveChannel, roomPath } from "./live_channel.js";
import { Leg } from "./leg.js";
import { startLobby } from "./lobby.js";
import { LevelMeter } from "./meter.js";
import { $, alertUser, duration, el, needLink, setStatus, setText, show } from "./ui.js";

const credentials = takeCredentials({ anyRoom: true });
if (!credentials) needLink("supervisor", "#token=… or #room=…&token=…");
else if (credentials.room === ANY_ROOM) startLobby(credentials);
else start(credentials);

function coachState(coach) {
  if (coach.audible) return "whispering — the agent hears them";
  if (coach.whispering && coach.muted) return "whispering, muted";
  if (coach.whispering) return "whispering, not talking";
  if (coach.monitoring) return "monitoring";
  return "in the room";
}

function coachRow(coach, you) {
  const mode = coach.mode === "open_mic" ? "open mic" : "push-to-talk";
  const row = el(
    "tr",
    { "data-coach": coach.subject, class: coach.audible ? "audible" : "" },
    el("td", { text: coach.subject === you ? `${coach.name} (you)` : coach.name }),
    el("td", { text: coachState(coach) }),
    el("td", { text: coach.muted ? `${mode}, muted` : mode }),
  );
  return row;
}

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

function isTextField(target) {
  return target instanceof HTMLTextAreaElement ||
    (target instanceof HTMLInputElement && !["radio", "checkbox", "button"].includes(target.type)) ||
    target?.isContentEditable;
}

function start(credentials) {
  const channel = new LiveChannel(roomPath(credentials.room), credentials.token);
  const leg = new Leg(credentials);
  const meters = { customer: new LevelMeter($("#meter-customer")), agent: new LevelMeter($("#meter-agent")) };
  let view = null;
  let openedAt = null;
  let talking = false; // the talk control is held down (Space or the button)
  let joining = false;
  $("#room").textContent = credentials.room;
  show($("#room-console"), true);
  if (peekClaims(credentials.token).room === ANY_ROOM) {
    const back = $("#back");
    show(back, true);
    back.addEventListener("click", (event) => {
      event.preventDefault(); // the page's pagehide handler leaves the room's media
      keepCredentials({ room: ANY_ROOM, token: credentials.token });
      location.replace("/console");
    });
  }

  const me = () => view?.coaches.find((coach) => coach.subject === view.you.subject);

  // The microphone is sent only while whispering. It opens at the click (so the first words
  // are not lost) and otherwise follows the view; the server decides whether anyone hears it.
  const syncMic = () => {
    const coach = me();
    leg.micOpen = Boolean(coach?.whispering && !coach.muted);
  };

  const draw = () => {
    if (!view) return;
    const coach = me();
    const inRoom = Boolean(coach) && leg.connected;
    $("#customer").textContent = view.customer?.name ?? "—";
    $("#agent").textContent = view.agent?.name ?? "—";
    const coaching = view.coaches.filter((c) => c.whispering).map((c) => c.name);
    $("#coaching").textContent = coaching.length ? coaching.join(", ") : "nobody";

    const monitor = $("#monitor");
    monitor.disabled = joining || view.closed || !leg.slots;
    monitor.textContent = !inRoom ? "Join and monitor" : coach.monitoring ? "Stop monitoring" : "Monitor";
    monitor.setAttribute("aria-pressed", String(inRoom && coach.monitoring));
    show($("#leave"), inRoom);
    show($("#meters"), inRoom);
    show($("#coach-controls"), inRoom && coach.can_whisper);
    show($("#cue-section"), inRoom && coach.can_whisper); // cues need the whisper claim too

    if (inRoom) {
      const whisper = $("#whisper");
      whisper.setAttribute("aria-pressed", String(coach.whispering));
      whisper.textContent = coach.whispering ? "Stop whisper" : "Whisper";
      const mute = $("#mute");
      mute.setAttribute("aria-pressed", String(coach.muted));
      mute.textContent = coach.muted ? "Unmute" : "Mute";
      for (const radio of document.querySelectorAll('input[name="mode"]')) {
        radio.checked = radio.value === coach.mode;
      }
      const ptt = coach.mode === "push_to_talk";
      const talk = $("#talk");
      show(talk, ptt);
      show($("#talk-hint"), ptt);
      talk.disabled = !coach.whispering;
      talk.setAttribute("aria-pressed", String(coach.talking));
      talk.textContent = coach.talking ? "Talking…" : "Hold to talk";
      talk.classList.toggle("on", coach.talking);
      const me = coach.audible
        ? "The agent hears you."
        : coach.whispering
          ? ptt ? "Whisper on: hold to talk." : "Whisper on, muted."
          : coach.monitoring ? "Monitoring: you hear the call." : "Not monitoring.";
      setText($("#me"), me);
      document.body.classList.toggle("audible", coach.audible);
    }
    $("#cues").replaceChildren(...[...view.cues].reverse().map(cueItem));
    show($("#no-cues"), view.cues.length === 0);
    $("#coaches").replaceChildren(...view.coaches.map((c) => coachRow(c, view.you.subject)));
    show($("#no-coaches"), view.coaches.length === 0);
    if (view.closed) setStatus("This call has ended.");
    else if (!leg.slots) setStatus("Connecting…");
    else setStatus(inRoom ? `Connected as ${view.you.name}.` : `Signed in as ${view.you.name}.`);
  };

  const tick = () => {
    $("#duration").textContent = openedAt ? duration(Date.now() - openedAt) : "—";
  };
  setInterval(tick, 1000);

  channel.addEventListener("hello", (event) => {
    leg.slots = event.detail.receive_slots;
    openedAt = event.detail.opened_at ? Date.parse(event.detail.opened_at) : null;
    tick();
    draw();
  });
  channel.addEventListener("view", (event) => {
    view = event.detail.view;
    if (!openedAt && view.version > 0) openedAt = Date.now();
    if (view.closed) leave();
    syncMic();
    draw();
  });
  channel.addEventListener("error", (event) => alertUser(event.detail.detail));
  channel.addEventListener("offline", () => setStatus("Connection lost: reconnecting…"));
  channel.addEventListener("fatal", (event) => setStatus(event.detail));

  const leave = () => {
    releaseTalk();
    leg.hangUp();
    meters.customer.detach();
    meters.agent.detach();
  };

  $("#monitor").addEventListener("click", async () => {
    const coach = me();
    if (coach && leg.connected) {
      channel.command({ command: coach.monitoring ? "stop_monitor" : "start_monitor" });
      return;
    }
    joining = true;
    draw();
    try {
      await leg.join({
        micOpen: false,
        onTrack: (slot, track) => meters[slot]?.attach(track),
      });
      channel.command({ command: "start_monitor" });
    } catch (error) {
      alertUser(`Could not join: ${error.message}`);
    }
    joining = false;
    draw();
  });
  $("#leave").addEventListener("click", () => {
    leave();
    draw();
  });

  $("#whisper").addEventListener("click", () => {
    const coach = me();
    if (!coach) return;
    if (coach.whispering) {
      leg.micOpen = false;
      channel.command({ command: "stop_whisper" });
    } else {
      leg.micOpen = !coach.muted;
      channel.command({ command: "start_whisper" });
    }
  });
  $("#mute").addEventListener("click", () => {
    const coach = me();
    if (!coach) return;
    if (!coach.muted) leg.micOpen = false;
    channel.command({ command: coach.muted ? "unmute_coach" : "mute_coach" });
  });
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      releaseTalk();
      channel.command({ command: "set_coach_mode", mode: radio.value });
    });
  }

  // Push-to-talk: the spacebar anywhere but in a text field, or the button (pointer or Enter).
  const pressTalk = () => {
    const coach = me();
    if (talking || !coach?.whispering || coach.mode !== "push_to_talk") return;
    talking = true;
    $("#talk").classList.add("on");
    channel.command({ command: "press_talk" });
  };
  function releaseTalk() {
    if (!talking) return;
    talking = false;
    $("#talk").classList.remove("on");
    channel.command({ command: "release_talk" });
  }
  const pttActive = () => me()?.whispering && me()?.mode === "push_to_talk";
  addEventListener("keydown", (event) => {
    if (event.code !== "Space" || isTextField(event.target) || !pttActive()) return;
    event.preventDefault(); // no scrolling, no button activation while talking
    if (!event.repeat) pressTalk();
  });
  addEventListener("keyup", (event) => {
    if (event.code !== "Space" || isTextField(event.target) || !talking) return;
    event.preventDefault();
    releaseTalk();
  });
  addEventListener("blur", releaseTalk); // never leave the talk button stuck down
  const talk = $("#talk");
  talk.addEventListener("pointerdown", (event) => {
    talk.setPointerCapture(event.pointerId);
    pressTalk();
  });
  for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
    talk.addEventListener(type, releaseTalk);
  }
  talk.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.repeat) pressTalk();
  });
  talk.addEventListener("keyup", (event) => event.key === "Enter" && releaseTalk());

  const sendCue = () => {
    const text = $("#cue-text").value.trim();
    if (!text) return;
    const id = channel.command({ command: "send_cue", cue_id: crypto.randomUUID(), text });
    if (id) $("#cue-text").value = "";
  };
  $("#cue-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendCue();
  });
  $("#cue-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      sendCue();
    }
  });

  addEventListener("pagehide", leave);
  channel.connect();
}
