// @ts-check
// Level meters for received audio: an AnalyserNode per track, drawn into a <meter>.

/** @type {AudioContext | undefined} */
let context;

// Browsers that keep an AudioContext suspended until a gesture (Firefox) get one here.
addEventListener("pointerdown", () => context?.resume().catch(() => {}));
addEventListener("keydown", () => context?.resume().catch(() => {}));

function audioContext() {
  context ??= new AudioContext();
  if (context.state === "suspended") context.resume().catch(() => {});
  return context;
}

export class LevelMeter {
  /** @param {HTMLMeterElement} meterElement */
  constructor(meterElement) {
    this.element = meterElement;
    /** @type {AnalyserNode | null} */
    this.analyser = null;
    /** @type {MediaStreamAudioSourceNode | null} */
    this.source = null;
    /** @type {Float32Array<ArrayBuffer> | null} */
    this.samples = null;
    /** @type {number | undefined} */
    this.timer = undefined;
  }

  /** @param {MediaStreamTrack} track */
  attach(track) {
    this.detach();
    const ctx = audioContext();
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 1024;
    this.samples = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
    this.timer = setInterval(() => this.draw(), 100);
  }

  draw() {
    if (!this.analyser || !this.samples) return; // detached
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const sample of this.samples) sum += sample * sample;
    const rms = Math.sqrt(sum / this.samples.length);
    // -60 dBFS .. 0 dBFS onto 0..1
    const db = 20 * Math.log10(rms + 1e-9);
    const level = Math.min(1, Math.max(0, (db + 60) / 60));
    this.element.value = level;
    this.element.textContent = `${Math.round(level * 100)}%`;
  }

  detach() {
    clearInterval(this.timer);
    this.source?.disconnect();
    this.source = this.analyser = null;
    this.element.value = 0;
  }
}
