// @ts-check
// The room and the token come in the link's fragment (/desk#room=r1&token=...). Browsers never
// send a fragment to a server, and it is removed from the address bar (and the history) at
// once, so the token is not left on screen or in a bookmark. It is kept in this tab's
// sessionStorage so that a reload still works, and nowhere else.
//
// The console alone also takes a link with no room (/console#token=..., or #room=*&token=...):
// a supervisor's `*` token, which opens the lobby of their queues' rooms. Its credentials are
// then {room: "*", token}. The desk and the call page always need a room.

export const ANY_ROOM = "*";

/** @typedef {{room: string, token: string}} Credentials */

const storageKey = () => `earpiece:${location.pathname}`;

/**
 * @param {{anyRoom?: boolean}} [options] anyRoom: a `*` token (no room) will do
 * @returns {Credentials | null}
 */
export function takeCredentials({ anyRoom = false } = {}) {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  const room = params.get("room") || (anyRoom ? ANY_ROOM : null);
  if (room && token && (anyRoom || room !== ANY_ROOM)) {
    history.replaceState(null, "", location.pathname + location.search);
    keepCredentials({ room, token });
    return { room, token };
  }
  try {
    const kept = JSON.parse(sessionStorage.getItem(storageKey()) ?? "null");
    if (kept?.room && kept?.token && (anyRoom || kept.room !== ANY_ROOM)) return kept;
  } catch {
    sessionStorage.removeItem(storageKey());
  }
  return null;
}

/**
 * What this tab's page opens with next (the lobby opens a room, a room goes back to the lobby).
 * @param {Credentials} credentials
 */
export function keepCredentials({ room, token }) {
  sessionStorage.setItem(storageKey(), JSON.stringify({ room, token }));
}

/**
 * The token's claims, read without checking its signature: for what a page shows (a name, the
 * queues, whether it is a `*` token), never for a decision. The server checks every request.
 * @param {string} token
 * @returns {Record<string, unknown>} unchecked, so each claim's type is the reader's to test
 */
export function peekClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)) ?? {};
  } catch {
    return {};
  }
}

/** @typedef {"customer" | "agent" | "supervisor"} Role */

/** @type {Record<Role, {who: string, page: string}>} */
const ROLE_WORDS = {
  customer: { who: "a customer", page: "the call page" },
  agent: { who: "an agent", page: "the agent desk" },
  supervisor: { who: "a supervisor", page: "the supervisor console" },
};

/**
 * What a page of `pageRole` says to a link whose role is `role`: null when it is the page's
 * own (or not known yet), else a sentence naming the page the link is for.
 * @param {Role} pageRole
 * @param {unknown} role from the token's payload or the socket's hello
 * @returns {string | null}
 */
export function roleRefusal(pageRole, role) {
  if (role === undefined || role === pageRole) return null;
  const page = ROLE_WORDS[pageRole];
  if (typeof role === "string" && Object.hasOwn(ROLE_WORDS, role)) {
    const theirs = ROLE_WORDS[/** @type {Role} */ (role)];
    return `This link is for ${theirs.who}, not ${page.who}: open it on ${theirs.page}.`;
  }
  return `This link is not for ${page.who}: ask for the link to ${page.page}.`;
}
