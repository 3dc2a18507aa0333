// Which server the page talks to, and the token kept for each: a token is
// bound to the origin it was entered for and never sent to another; a
// server named by a link (?server=) is used only once the person confirms
// it; the page knows which servers its Content-Security-Policy lets it
// reach (ferry serve --page-server) and says so before trying one it may
// not.

/** A server the page may talk to. */
export interface Target {
  /**
   * The server's base URL without a trailing "/", or "" for the page's
   * own origin (kept as "" so that saved uploads and settings stay valid
   * wherever the page is served from).
   */
  server: string;
  /** The server's origin (scheme://host[:port]): what its token is bound to. */
  origin: string;
}

/** The page's own server. */
export function ownTarget(): Target {
  return { server: "", origin: location.origin };
}

/**
 * parseServer reads a server address typed by a person or taken from a
 * link: "" for the page's own server, else an http or https URL without
 * user name, query or fragment. It returns the target, or a sentence
 * saying what is wrong.
 */
export function parseServer(text: string): Target | string {
  const s = text.trim();
  if (s === "") return ownTarget();
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return `"${s}" is not a server address: write it as http://host:port or https://host.`;
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return `"${s}" is not a server address: it must start with http:// or https://.`;
  if (u.username !== "" || u.password !== "") return `"${s}" holds a user name or password; give the token under Settings instead.`;
  if (u.search !== "" || u.hash !== "") return `"${s}" has a query or fragment; a server address has neither.`;
  const path = u.pathname.replace(/\/+$/, "");
  if (u.origin === location.origin && path === "") return ownTarget();
  return { server: u.origin + path, origin: u.origin };
}

/** sameTarget reports whether a and b are the same server. */
export function sameTarget(a: Target, b: Target): boolean {
  return a.server === b.server && a.origin === b.origin;
}

/**
 * pageServers returns the origins the page's Content-Security-Policy lets
 * it connect to besides its own, as the server that served the page wrote
 * them into <meta name="ferry-page-servers"> (space-separated).
 */
export function pageServers(): string[] {
  const meta = document.querySelector<HTMLMetaElement>('meta[name="ferry-page-servers"]');
  return (meta?.content ?? "").split(/\s+/).filter((s) => s !== "");
}

/** reachable reports whether the page's Content-Security-Policy lets it connect to t. */
export function reachable(t: Target): boolean {
  return t.origin === location.origin || pageServers().includes(t.origin);
}

/** unreachableText explains why the page may not connect to t. */
export function unreachableText(t: Target): string {
  return (
    `This page may not connect to ${t.origin}: its Content-Security-Policy lets it reach only its own server (${location.origin})` +
    ` and the servers its operator lists with ferry serve --page-server. Ask the operator to add --page-server ${t.origin},` +
    ` or open the page that ${t.origin} serves itself.`
  );
}

// Tokens live in sessionStorage (this tab only: they are credentials),
// one per origin.
const tokenPrefix = "ferry.token:";
// Origins confirmed from a link in this tab, so that a reload does not ask again.
const confirmedKey = "ferry.confirmed";

/** tokenFor returns the token entered for origin in this tab, or "". */
export function tokenFor(origin: string): string {
  try {
    return sessionStorage.getItem(tokenPrefix + origin) ?? "";
  } catch {
    return "";
  }
}

/** setToken keeps token for origin in this tab ("" forgets it). */
export function setToken(origin: string, token: string): void {
  try {
    if (token === "") sessionStorage.removeItem(tokenPrefix + origin);
    else sessionStorage.setItem(tokenPrefix + origin, token);
  } catch {
    // Storage disabled: the token works until the page is left.
  }
}

/**
 * forgetUnboundToken drops the token that earlier versions of the page
 * kept under one name for whatever server was chosen: it is bound to no
 * origin, so it is not used.
 */
export function forgetUnboundToken(): void {
  try {
    sessionStorage.removeItem("ferry.token");
  } catch {
    // Storage disabled: nothing kept.
  }
}

function confirmedOrigins(): string[] {
  try {
    const v: unknown = JSON.parse(sessionStorage.getItem(confirmedKey) ?? "[]");
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
  } catch {
    return [];
  }
}

/** wasConfirmed reports whether the person confirmed origin from a link in this tab. */
export function wasConfirmed(origin: string): boolean {
  return confirmedOrigins().includes(origin);
}

/**
 * confirmServer records that the person chose origin from a link in this tab.
 * The server starts with no token: whatever was kept for its origin is
 * dropped, so that only a token entered after the choice goes to it.
 */
export function confirmServer(origin: string): void {
  setToken(origin, "");
  try {
    sessionStorage.setItem(confirmedKey, JSON.stringify([...new Set([...confirmedOrigins(), origin])]));
  } catch {
    // Storage disabled: a reload asks again.
  }
}
