// The room and the token come in the link's fragment (/desk#room=r1&token=...). Browsers never
// send a fragment to a server, and it is removed from the address bar (and the history) at
// once, so the token is not left on screen or in a bookmark. It is kept in this tab's
// sessionStorage so that a reload still works, and nowhere else.

export function takeCredentials() {
  const key = `earpiece:${location.pathname}`;
  const params = new URLSearchParams(location.hash.slice(1));
  const room = params.get("room");
  const token = params.get("token");
  if (room && token) {
    history.replaceState(null, "", location.pathname + location.search);
    sessionStorage.setItem(key, JSON.stringify({ room, token }));
    return { room, token };
  }
  try {
    const kept = JSON.parse(sessionStorage.getItem(key) ?? "null");
    if (kept?.room && kept?.token) return kept;
  } catch {
    sessionStorage.removeItem(key);
  }
  return null;
}
