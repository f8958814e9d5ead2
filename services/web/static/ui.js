// Small DOM helpers. Text from the server only ever goes in through textContent.

export const $ = (selector, root = document) => root.querySelector(selector);

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function show(node, visible) {
  node.hidden = !visible;
}

// A live region is read aloud on every change, even to the same words: write new text only.
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function setStatus(text) {
  setText($("#status"), text);
}

// Sentences for screen readers, in the page's visually hidden #announcer. Those announced
// together are written together; the region is emptied first, so that the same sentence
// twice (a coach whispering again) is read twice.
let announcing = [];
let announceTimer;
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

let alertTimer;
export function alertUser(text) {
  const region = $("#alert");
  region.textContent = text;
  clearTimeout(alertTimer);
  alertTimer = setTimeout(() => (region.textContent = ""), 8000);
}

export function duration(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(seconds / 3600);
  const mm = String(Math.floor((seconds % 3600) / 60)).padStart(2, "0");
  const ss = String(seconds % 60).padStart(2, "0");
  return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}

// A page with no credentials says how to get in, and does nothing else.
export function needLink(role, ending = "#room=…&token=…") {
  setStatus(`Open this page with the link you were given (it ends in ${ending}): ` +
    `it carries your ${role} access.`);
}
