// @ts-check
// WebRTC through the service: WHIP (RFC 9725) publishes the microphone, WHEP receives. The
// offer is sent once ICE gathering is complete (the service takes no trickled candidates);
// the bearer token goes in a header.

const GATHER_TIMEOUT_MS = 2000;
const ANSWER_TIMEOUT_MS = 15_000; // a service that takes the offer and never answers is down
const DELETE_TIMEOUT_MS = 5000;

/** The service refused a session (or could not be reached): why, and its HTTP status if any. */
export class SessionRefused extends Error {
  /**
   * @param {string} message
   * @param {number | null} status null: no answer at all (unreachable, timed out)
   */
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** @typedef {(slot: string, track: MediaStreamTrack) => void} OnTrack */

export const MIC_CONSTRAINTS = {
  audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  video: false,
};

export class MediaSession {
  /**
   * @param {RTCPeerConnection} pc
   * @param {string | null} location the session's URL (the 201's Location); null once closed
   * @param {string} token
   */
  constructor(pc, location, token) {
    this.pc = pc;
    this.location = location;
    this.token = token;
  }

  /**
   * Ends the session on the server (which makes us leave once both are gone) and locally.
   * @param {boolean} [tell] false: the server has ended it already (the room closed)
   */
  close(tell = true) {
    const { pc, location } = this;
    this.location = null;
    if (!location || !tell) {
      pc.close();
      return;
    }
    // Nothing more is sent meanwhile; the connection itself is closed once the DELETE is
    // answered: closed first, the service would end the session on its own, and answer the
    // DELETE with a 404 that the browser logs as an error.
    for (const sender of pc.getSenders()) sender.replaceTrack(null).catch(() => {});
    fetch(location, {
      method: "DELETE",
      headers: { authorization: `Bearer ${this.token}` },
      keepalive: true,
      signal: AbortSignal.timeout(DELETE_TIMEOUT_MS),
    })
      .catch(() => {})
      .finally(() => pc.close());
  }
}

/**
 * @param {string} room
 * @param {string} token
 * @param {MediaStreamTrack} track
 * @param {RTCConfiguration} ice the TURN servers and ICE policy the server's hello gave
 */
export async function publish(room, token, track, ice) {
  const pc = new RTCPeerConnection(ice);
  pc.addTransceiver(track, { direction: "sendonly" });
  return negotiate(pc, `/rooms/${encodeURIComponent(room)}/whip`, token);
}

/**
 * One recvonly transceiver per receive slot, in the slots' order; onTrack(slotName, track).
 * @param {string} room
 * @param {string} token
 * @param {string[]} slots
 * @param {RTCConfiguration} ice
 * @param {OnTrack} onTrack
 */
export async function receive(room, token, slots, ice, onTrack) {
  const pc = new RTCPeerConnection(ice);
  const transceivers = slots.map(() => pc.addTransceiver("audio", { direction: "recvonly" }));
  pc.addEventListener("track", (event) => {
    const index = transceivers.indexOf(event.transceiver);
    if (index >= 0) onTrack(slots[index], event.track);
  });
  return negotiate(pc, `/rooms/${encodeURIComponent(room)}/whep`, token);
}

/**
 * @param {RTCPeerConnection} pc
 * @param {string} path
 * @param {string} token
 * @returns {Promise<MediaSession>}
 */
async function negotiate(pc, path, token) {
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    /** @type {Response} */
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/sdp" },
        body: /** @type {RTCSessionDescription} */ (pc.localDescription).sdp, // set just above
        signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
      });
    } catch {
      throw new SessionRefused("The service cannot be reached.", null);
    }
    if (response.status !== 201) throw new SessionRefused(await reason(response), response.status);
    const location = response.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    return new MediaSession(pc, location, token);
  } catch (error) {
    pc.close();
    throw error;
  }
}

/**
 * @param {RTCPeerConnection} pc
 * @returns {Promise<void>}
 */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/**
 * @param {Response} response
 * @returns {Promise<string>}
 */
async function reason(response) {
  try {
    const body = await response.json();
    return body.detail || body.error || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

/**
 * Plays a received track. The element is never muted: muting is the user's system's business
 * (and a muted element reads as silence to the page's own meters in Chromium).
 * @param {MediaStreamTrack} track
 * @param {string} label
 */
export function play(track, label) {
  const audio = document.createElement("audio");
  audio.autoplay = true;
  audio.dataset.slot = label;
  audio.srcObject = new MediaStream([track]);
  document.body.append(audio);
  audio.play().catch(() => {});
  track.addEventListener("ended", () => audio.remove());
  return audio;
}

export async function microphone() {
  const stream = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
  return stream.getAudioTracks()[0];
}
