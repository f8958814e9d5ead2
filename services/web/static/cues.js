// @ts-check
// The agent's cue panel: floating on the page, or in a Document Picture-in-Picture window that
// stays on top of other applications where the browser has the API (Chromium 116+).

import { $, announce, el, show } from "./ui.js";

/** @typedef {import("./live_channel.js").CueView} CueView */

// Document Picture-in-Picture, which TypeScript's DOM types do not have (Chromium only).
/**
 * @typedef {{requestWindow(options: {width: number, height: number}): Promise<Window>}} PipApi
 * @typedef {typeof window & {documentPictureInPicture: PipApi}} PipHost
 */

export class CuePanel {
  /**
   * @param {HTMLElement} panel
   * @param {(cueId: string) => void} onAcknowledge
   */
  constructor(panel, onAcknowledge) {
    this.panel = panel;
    this.home = /** @type {HTMLElement} */ (panel.parentElement);
    this.onAcknowledge = onAcknowledge;
    /** @type {Window | null} the picture-in-picture window, while the panel is in it */
    this.window = null;
    /** @type {Set<string>} the cues already announced */
    this.shown = new Set();
    /** @type {string | null} the cue whose Acknowledge was clicked, until it is drawn done */
    this.acknowledging = null;
    const popOut = $("#pop-out", panel);
    if ("documentPictureInPicture" in window) {
      show(popOut, true);
      popOut.addEventListener("click", () => (this.window ? this.dock() : this.popOut()));
    }
  }

  async popOut() {
    const { documentPictureInPicture } = /** @type {PipHost} */ (window);
    const pip = await documentPictureInPicture.requestWindow({ width: 380, height: 460 });
    const style = pip.document.createElement("link");
    style.rel = "stylesheet";
    style.href = new URL("/static/style.css", location.href).href;
    pip.document.head.append(style);
    pip.document.title = "Cues";
    pip.document.body.className = "pip";
    pip.document.body.append(this.panel);
    $("#pop-out", this.panel).textContent = "Back to page";
    pip.addEventListener("pagehide", () => this.dock());
    this.window = pip;
  }

  dock() {
    if (!this.window) return;
    const pip = this.window;
    this.window = null;
    this.home.append(this.panel);
    $("#pop-out", this.panel).textContent = "Pop out";
    pip.close();
  }

  /**
   * Focus for the cue `cueId` after a redraw: its button while it waits, else the next
   * waiting cue's (or the one before), else the cue itself.
   * @param {HTMLElement} list
   * @param {string} cueId
   */
  refocus(list, cueId) {
    // Elements by attribute, not instanceof: in the picture-in-picture window they belong to
    // another document.
    const items = /** @type {HTMLElement[]} */ ([...list.children]);
    const at = items.findIndex((item) => item.getAttribute("data-cue") === cueId);
    const item = items[at];
    const button = (/** @type {HTMLElement | undefined} */ other) => other?.querySelector("button");
    const next = at < 0 ? undefined : [...items.slice(at + 1), ...items.slice(0, at).reverse()];
    const target = button(item) ?? button(next?.find((other) => button(other)));
    if (target) target.focus();
    else if (item) {
      item.tabIndex = -1; // reachable by script only: the place the user was
      item.focus();
    }
  }

  /** @param {CueView[]} cues */
  draw(cues) {
    const list = $("#cues", this.panel);
    const items = [...cues].reverse().map((cue) => {
      const done = cue.acknowledged;
      const item = el(
        "li",
        { class: done ? "cue done" : "cue", "data-cue": cue.cue_id },
        el("p", { class: "cue-text", text: cue.text }),
        el("p", { class: "cue-from", text: `from ${cue.coach_name}` }),
      );
      if (done) item.append(el("p", { class: "cue-state", text: "✓ Acknowledged" }));
      else {
        const button = el("button", { type: "button", class: "primary", text: "Acknowledge" });
        button.setAttribute("aria-label", `Acknowledge cue: ${cue.text}`);
        button.addEventListener("click", () => {
          // aria-disabled, not disabled: a disabled button drops the keyboard focus to the page.
          if (button.getAttribute("aria-disabled") === "true") return;
          button.setAttribute("aria-disabled", "true");
          this.acknowledging = cue.cue_id;
          this.onAcknowledge(cue.cue_id);
        });
        item.append(button);
      }
      return item;
    });
    // Keep focus where it was if that cue still waits; once it is acknowledged, move it on to
    // the next cue that waits, or else to the acknowledged cue itself.
    const doc = this.panel.ownerDocument;
    const active = doc.activeElement;
    const focusedCue =
      active && this.panel.contains(active) ? active.closest("[data-cue]") : undefined;
    const lostFocus = !active || active === doc.body;
    const focused = focusedCue?.getAttribute("data-cue") ?? (lostFocus ? this.acknowledging : null);
    list.replaceChildren(...items);
    if (focused) this.refocus(list, focused);
    if (this.acknowledging && cues.some((c) => c.cue_id === this.acknowledging && c.acknowledged)) {
      this.acknowledging = null;
    }
    const waiting = cues.filter((cue) => !cue.acknowledged).length;
    $("#cue-count", this.panel).textContent = waiting ? `(${waiting} new)` : "";
    show($("#no-cues", this.panel), cues.length === 0);
    const fresh = cues.filter((cue) => !this.shown.has(cue.cue_id) && !cue.acknowledged);
    for (const cue of cues) this.shown.add(cue.cue_id);
    if (fresh.length) {
      this.panel.classList.add("attention");
      announce(fresh.map((cue) => `Cue from ${cue.coach_name}: ${cue.text}`).join(" "));
    } else if (!waiting) {
      this.panel.classList.remove("attention");
    }
  }
}
