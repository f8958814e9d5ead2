// @ts-check
// Small DOM helpers. Text from the server only ever goes in through textContent.

/**
 * The element `selector` finds: the pages' markup has each one a script looks up (`?.` where
 * it may not). A caller that needs more than an HTMLElement casts it, e.g. to a button.
 * @param {string} selector
 * @param {ParentNode} [root]
 * @returns {HTMLElement}
 */
export const $ = (selector, root = document) =>
  /** @type {HTMLElement} */ (root.querySelector(selector));

/** @typedef {string | number | boolean | null | undefined} Attribute */

/**
 * A new element; `text` and `class` set its text and classes, a false or missing value is left
 * out, and null or undefined children are skipped.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, Attribute>} [attributes]
 * @param {...(Node | string | null | undefined)} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "class") node.className = String(value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/**
 * @param {HTMLElement} node
 * @param {boolean} visible
 */
export function show(node, visible) {
  node.hidden = !visible;
}

/**
 * A live region is read aloud on every change, even to the same words: write new text only.
 * @param {Node} node
 * @param {string} text
 */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** What every page says while its live socket or its call's media is being made again. */
export const RECONNECTING = "Connection lost: reconnecting…";

/** @param {string} text */
export function setStatus(text) {
  setText($("#status"), text);
}

// Sentences for screen readers, in the page's visually hidden #announcer. Those announced
// together are written together; the region is emptied first, so that the same sentence
// twice (a coach whispering again) is read twice.
/** @type {string[]} */
let announcing = [];
/** @type {number | undefined} */
let announceTimer;
/** @param {string} text */
export function announce(text) {
  const region = $("#announcer");
  announcing.push(text);
  region.textContent = "";
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    region.textContent = announcing.join(" ");
    announcing = [];
  }, 100);
}

/** @type {number | undefined} */
let alertTimer;
/** @param {string} text */
export function alertUser(text) {
  const region = $("#alert");
  region.textContent = text;
  clearTimeout(alertTimer);
  alertTimer = setTimeout(() => (region.textContent = ""), 8000);
}

/**
 * A length of time as mm:ss, or h:mm:ss from an hour on.
 * @param {number} ms
 */
export function duration(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(seconds / 3600);
  const mm = String(Math.floor((seconds % 3600) / 60)).padStart(2, "0");
  const ss = String(seconds % 60).padStart(2, "0");
  return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}

/**
 * A page with no credentials says how to get in, and does nothing else.
 * @param {string} role
 * @param {string} [ending] how the page's link ends
 */
export function needLink(role, ending = "#room=…&token=…") {
  setStatus(`Open this page with the link you were given (it ends in ${ending}): ` +
    `it carries your ${role} access.`);
}
