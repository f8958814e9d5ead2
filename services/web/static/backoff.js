// @ts-check
// Capped exponential back-off for the pages' reconnects (the live socket, a leg's media): the
// wait doubles from 0.5 s up to 10 s while tries fail, and starts again once one works.

export class Backoff {
  /**
   * @param {number} [firstMs]
   * @param {number} [maxMs]
   */
  constructor(firstMs = 500, maxMs = 10_000) {
    this.firstMs = firstMs;
    this.maxMs = maxMs;
    this.waitMs = firstMs;
  }

  /** The wait before the next try (ms); the one after is twice as long, up to the cap. */
  next() {
    const wait = this.waitMs;
    this.waitMs = Math.min(this.waitMs * 2, this.maxMs);
    return wait;
  }

  reset() {
    this.waitMs = this.firstMs;
  }
}
