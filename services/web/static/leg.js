// @ts-check
// One person's two media sessions: the microphone (WHIP) and the ears (WHEP, one track per
// receive slot named by the server's `hello`). Who hears whom is decided by the server.
//
// The leg watches both peer connections (connectionState, which follows DTLS too, and
// iceConnectionState). When either fails, closes, or stays disconnected for more than a moment,
// the leg is `reconnecting`: both sessions are ended and made again (new WHIP and WHEP
// sessions, the same microphone), backing off up to 10 s like the live socket, until both are
// connected again. Only a hang-up stops it. The page is told with a `change` event on every
// status, `dropped` when a connection is lost, and `restored` once both are back.
//
// A browser takes some seconds to notice a peer that is gone. When the page's live socket
// drops, what held it (the service's process) may have held the media too, so the page calls
// `suspect()`: the leg is `checking` until both connections have received packets again (the
// service sends RTCP on each at least every 1.5 s), and lost if they have not within 3 s.

import { Backoff } from "./backoff.js";
import { SessionRefused, microphone, play, publish, receive } from "./media.js";

/** @typedef {import("./link.js").Credentials} Credentials */
/** @typedef {import("./live_channel.js").Hello} Hello */
/** @typedef {import("./media.js").MediaSession} MediaSession */
/** @typedef {import("./media.js").OnTrack} OnTrack */

/**
 * idle: not in the call; connecting: joining, not yet connected; connected: both connections
 * are up; checking: they may be gone, and must show they are not; reconnecting: one was lost,
 * new sessions are being made.
 * @typedef {"idle" | "connecting" | "connected" | "checking" | "reconnecting"} LegStatus
 */

const DROP_AFTER_MS = 2000; // a connection disconnected this long is lost
const CONNECT_WITHIN_MS = 10_000; // new sessions not both connected by then are made again
const GIVE_UP = new Set([401, 403]); // the token will not do: trying again cannot help
const BUSY = new Set([408, 429, 503]); // a first join tries again on these, and on no answer
const VERIFY_WITHIN_MS = 3000; // a suspected connection that receives nothing this long is lost
const VERIFY_EVERY_MS = 200;

/**
 * How much a connection has received (bytes, and ICE checks and answers): a number that
 * grows while its peer is alive; null where the browser does not say.
 * @param {RTCPeerConnection} pc
 * @returns {Promise<number | null>}
 */
async function received(pc) {
  /** @type {RTCStatsReport} */
  let stats;
  try {
    stats = await pc.getStats();
  } catch {
    return null; // closed meanwhile: the generation check that follows tells
  }
  let total = null;
  for (const report of stats.values()) {
    if (report.type !== "candidate-pair") continue;
    for (const key of ["bytesReceived", "responsesReceived", "requestsReceived"]) {
      if (typeof report[key] === "number") total = (total ?? 0) + report[key];
    }
  }
  return total;
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {RTCPeerConnection} pc */
const isUp = (pc) =>
  pc.connectionState === "connected" &&
  (pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed");

/** @param {RTCPeerConnection} pc */
const isLost = (pc) =>
  pc.connectionState === "failed" ||
  pc.connectionState === "closed" ||
  pc.iceConnectionState === "failed" ||
  pc.iceConnectionState === "closed";

/** @param {RTCPeerConnection} pc */
const isWavering = (pc) =>
  pc.connectionState === "disconnected" || pc.iceConnectionState === "disconnected";

export class Leg extends EventTarget {
  /** @param {Credentials} credentials */
  constructor(credentials) {
    super();
    this.credentials = credentials;
    /** @type {string[] | null} the receive slots, from the server's hello */
    this.slots = null;
    /** @type {RTCConfiguration} the TURN servers and ICE policy, from the server's hello */
    this.ice = { iceServers: [] };
    /** @type {MediaStreamTrack | null} */
    this.mic = null;
    /** @type {MediaSession | null} */
    this.sending = null;
    /** @type {MediaSession | null} */
    this.receiving = null;
    /** @type {Map<string, MediaStreamTrack>} */
    this.tracks = new Map();
    /** @type {LegStatus} */
    this.status = "idle";
    /** @type {OnTrack} */
    this.onTrack = () => {};
    this.backoff = new Backoff();
    // Each set of sessions has a number; what an older set reports is ignored.
    this.generation = 0;
    /** @type {number | undefined} */
    this.retryTimer = undefined;
    /** @type {number | undefined} */
    this.dropTimer = undefined;
    /** @type {number | undefined} */
    this.connectTimer = undefined;
  }

  /**
   * What the server's hello says the leg needs: its receive slots, and how to reach the media.
   * @param {Hello} hello
   */
  greeted(hello) {
    this.slots = hello.receive_slots;
    this.ice = {
      iceServers: (hello.ice_servers ?? []).map(({ urls, username, credential }) => ({
        urls,
        username,
        credential,
      })),
      iceTransportPolicy: hello.ice_transport_policy ?? "all",
    };
  }

  /** In the call: joined and not hung up, even while reconnecting. */
  get joined() {
    return this.status !== "idle";
  }

  /** Both connections are up: the only time a page may say it is on the call. */
  get connected() {
    return this.status === "connected";
  }

  /** Not known to be lost: connected, or connected and being checked. */
  get live() {
    return this.status === "connected" || this.status === "checking";
  }

  /**
   * The page's live socket dropped: its connections may have gone with what held it. Until
   * both have received something since, the leg is `checking`; if they do not soon, it is
   * lost and reconnects.
   */
  async suspect() {
    if (this.status !== "connected" || !this.sending || !this.receiving) return;
    const generation = this.generation;
    const pcs = [this.sending.pc, this.receiving.pc];
    this.setStatus("checking");
    const before = await Promise.all(pcs.map(received));
    const deadline = performance.now() + VERIFY_WITHIN_MS;
    const alive = pcs.map((_, i) => before[i] === null);
    // (Status read through a method: TypeScript keeps it narrowed to "connected" otherwise.)
    const checking = () => generation === this.generation && this.status === "checking";
    while (checking()) {
      await sleep(VERIFY_EVERY_MS);
      if (!checking()) return;
      const now = await Promise.all(pcs.map(received));
      now.forEach((count, i) => {
        if (count === null || count > /** @type {number} */ (before[i])) alive[i] = true;
      });
      if (alive.every(Boolean) && pcs.every(isUp)) {
        this.setStatus("connected");
      } else if (performance.now() > deadline) {
        this.drop(generation);
      }
    }
  }

  /**
   * Joins the room's media: the microphone first (muted until `micOpen`), then the slots.
   * Resolves once both sessions are answered; `connected` follows when their connections are.
   * @param {{micOpen?: boolean, onTrack?: OnTrack}} [options]
   */
  async join({ micOpen = true, onTrack = () => {} } = {}) {
    if (!this.slots) throw new Error("Not connected to the room yet.");
    if (this.joined) return;
    this.onTrack = onTrack;
    this.backoff.reset();
    this.setStatus("connecting");
    const generation = ++this.generation;
    try {
      const mic = await microphone();
      if (generation !== this.generation) {
        mic.stop(); // hung up meanwhile
        return;
      }
      this.mic = mic;
      this.mic.enabled = micOpen;
      await this.connect(generation);
    } catch (error) {
      if (generation !== this.generation) throw error; // hung up meanwhile
      if (error instanceof SessionRefused && (error.status === null || BUSY.has(error.status))) {
        // The service is away or busy for a moment (Redis, a room moving between workers):
        // keep trying, as after a drop, rather than leave the person out of their call.
        this.closeSessions();
        this.setStatus("reconnecting");
        this.retryLater();
        return;
      }
      this.hangUp();
      throw error;
    }
  }

  /**
   * A newer token (the live socket's `resume`): new sessions, and the ends of these, use it.
   * @param {string} token
   */
  renew(token) {
    this.credentials.token = token;
    for (const session of [this.sending, this.receiving]) if (session) session.token = token;
  }

  /** @param {boolean} open */
  set micOpen(open) {
    if (this.mic) this.mic.enabled = open;
  }

  get micOpen() {
    return this.mic?.enabled ?? false;
  }

  /**
   * Leaves the call, by the user's wish or because it ended: nothing is made again.
   * @param {{ended?: boolean}} [options] ended: the room closed, and the server ended the
   *   sessions with it (nothing to tell it)
   */
  hangUp({ ended = false } = {}) {
    this.generation++;
    clearTimeout(this.retryTimer);
    this.closeSessions(!ended);
    this.mic?.stop();
    this.mic = null;
    this.backoff.reset();
    this.setStatus("idle");
  }

  /**
   * New sessions, for the set numbered `generation`: publish, then receive.
   * @param {number} generation
   */
  async connect(generation) {
    const { room, token } = this.credentials;
    const slots = /** @type {string[]} */ (this.slots); // join needs them
    if (!this.mic || this.mic.readyState === "ended") {
      const enabled = this.mic?.enabled ?? false;
      const mic = await microphone();
      if (generation !== this.generation) {
        mic.stop(); // hung up meanwhile
        return;
      }
      this.mic = mic;
      this.mic.enabled = enabled;
    }
    const sending = await publish(room, token, this.mic, this.ice);
    if (generation !== this.generation) {
      sending.close(); // hung up meanwhile
      return;
    }
    this.sending = sending;
    this.watch(sending.pc, generation);
    const receiving = await receive(room, token, slots, this.ice, (slot, track) => {
      if (generation !== this.generation) return;
      this.tracks.set(slot, track);
      play(track, slot);
      this.onTrack(slot, track);
    });
    if (generation !== this.generation) {
      receiving.close();
      return;
    }
    this.receiving = receiving;
    this.watch(receiving.pc, generation);
    this.connectTimer = setTimeout(() => this.drop(generation), CONNECT_WITHIN_MS);
    this.check(generation);
  }

  /**
   * @param {RTCPeerConnection} pc
   * @param {number} generation
   */
  watch(pc, generation) {
    const check = () => this.check(generation);
    pc.addEventListener("connectionstatechange", check);
    pc.addEventListener("iceconnectionstatechange", check);
  }

  /**
   * What the connections of set `generation` add up to, after either changed.
   * @param {number} generation
   */
  check(generation) {
    if (generation !== this.generation || !this.joined) return;
    const pcs = [this.sending?.pc, this.receiving?.pc];
    if (pcs.some((pc) => pc && isLost(pc))) {
      this.drop(generation);
      return;
    }
    if (!this.sending || !this.receiving) return; // still negotiating
    const { pc: sent } = this.sending;
    const { pc: got } = this.receiving;
    if (isUp(sent) && isUp(got)) {
      clearTimeout(this.dropTimer);
      clearTimeout(this.connectTimer);
      this.dropTimer = this.connectTimer = undefined;
      this.backoff.reset();
      const was = this.status;
      if (was === "checking") return; // up as far as ICE knows: suspect() decides
      this.setStatus("connected");
      if (was === "reconnecting") this.dispatchEvent(new Event("restored"));
    } else if (isWavering(sent) || isWavering(got)) {
      // A moment's loss of packets is not a lost call: it is lost if it lasts.
      this.dropTimer ??= setTimeout(() => this.drop(generation), DROP_AFTER_MS);
    }
  }

  /**
   * A connection of set `generation` is lost: end both sessions, and make them again.
   * @param {number} generation
   */
  drop(generation) {
    if (generation !== this.generation || !this.joined) return;
    this.generation++;
    this.closeSessions();
    const first = this.status !== "reconnecting";
    this.setStatus("reconnecting");
    if (first) this.dispatchEvent(new Event("dropped"));
    this.retryLater();
  }

  retryLater() {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.retry(), this.backoff.next());
  }

  async retry() {
    if (this.status !== "reconnecting") return;
    const generation = ++this.generation;
    try {
      await this.connect(generation);
    } catch (error) {
      if (generation !== this.generation) return; // hung up meanwhile
      this.closeSessions();
      if (error instanceof SessionRefused && error.status !== null && GIVE_UP.has(error.status)) {
        this.hangUp();
        this.dispatchEvent(new CustomEvent("failed", { detail: error.message }));
        return;
      }
      this.retryLater();
    }
  }

  /** @param {boolean} [tell] end them on the server too (not when it has ended them) */
  closeSessions(tell = true) {
    clearTimeout(this.dropTimer);
    clearTimeout(this.connectTimer);
    this.dropTimer = this.connectTimer = undefined;
    this.sending?.close(tell);
    this.receiving?.close(tell);
    this.sending = this.receiving = null;
    this.tracks.clear();
    for (const audio of document.querySelectorAll("audio[data-slot]")) audio.remove();
  }

  /** @param {LegStatus} status */
  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.dispatchEvent(new Event("change"));
  }
}
