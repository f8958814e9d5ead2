// @ts-check
// One person's two media sessions: the microphone (WHIP) and the ears (WHEP, one track per
// receive slot named by the server's `hello`). Who hears whom is decided by the server.

import { microphone, play, publish, receive } from "./media.js";

/** @typedef {import("./link.js").Credentials} Credentials */
/** @typedef {import("./media.js").MediaSession} MediaSession */
/** @typedef {import("./media.js").OnTrack} OnTrack */

export class Leg {
  /** @param {Credentials} credentials */
  constructor(credentials) {
    this.credentials = credentials;
    /** @type {string[] | null} the receive slots, from the server's hello */
    this.slots = null;
    /** @type {MediaStreamTrack | null} */
    this.mic = null;
    /** @type {MediaSession | null} */
    this.sending = null;
    /** @type {MediaSession | null} */
    this.receiving = null;
    /** @type {Map<string, MediaStreamTrack>} */
    this.tracks = new Map();
  }

  get connected() {
    return this.sending !== null && this.receiving !== null;
  }

  /**
   * Joins the room's media: the microphone first (muted until `micOpen`), then the slots.
   * @param {{micOpen?: boolean, onTrack?: OnTrack}} [options]
   */
  async join({ micOpen = true, onTrack = () => {} } = {}) {
    if (!this.slots) throw new Error("Not connected to the room yet.");
    const { room, token } = this.credentials;
    try {
      this.mic = await microphone();
      this.mic.enabled = micOpen;
      this.sending = await publish(room, token, this.mic);
      this.receiving = await receive(room, token, this.slots, (slot, track) => {
        this.tracks.set(slot, track);
        play(track, slot);
        onTrack(slot, track);
      });
    } catch (error) {
      this.hangUp();
      throw error;
    }
  }

  /** @param {boolean} open */
  set micOpen(open) {
    if (this.mic) this.mic.enabled = open;
  }

  get micOpen() {
    return this.mic?.enabled ?? false;
  }

  hangUp() {
    this.sending?.close();
    this.receiving?.close();
    this.mic?.stop();
    this.sending = this.receiving = this.mic = null;
    this.tracks.clear();
    for (const audio of document.querySelectorAll("audio[data-slot]")) audio.remove();
  }
}
