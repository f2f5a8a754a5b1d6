// The REST API and the session: tokens live in localStorage so a reload
// keeps you signed in; the access token is refreshed before it runs out.
const KEY = "docspot.session";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.error_description || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code || problem?.error || "error";
    this.problem = problem;
  }
}

function load() {
  try { return JSON.parse(localStorage.getItem(KEY)); } catch { return null; }
}

let session = load();
const listeners = new Set();

/** Claims of the access token (role, doctor_id, sub), or null. */
export function claims() {
  if (!session) return null;
  try {
    const part = session.access_token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch { return null; }
}

export const onSession = (f) => listeners.add(f);
function setSession(s) {
  session = s;
  if (s) localStorage.setItem(KEY, JSON.stringify(s)); else localStorage.removeItem(KEY);
  listeners.forEach((f) => f(claims()));
}

async function tokenRequest(form) {
  const r = await fetch("/api/v1/auth/token", { method: "POST", body: new URLSearchParams(form) });
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, body);
  setSession({ ...body, expires_at: Date.now() + body.expires_in * 1000 });
  return claims();
}

export const signIn = (email, password) =>
  tokenRequest({ grant_type: "password", username: email, password });

export async function register(email, password, name) {
  await call("POST", "/api/v1/auth/register", { email, password, name }, { anonymous: true });
  return signIn(email, password);
}

export const signOut = () => setSession(null);

let refreshing = null;
/** A valid access token, refreshed when within a minute of expiry (or
 * always, with `fresh`: the server said it expired, whatever this clock
 * thinks); null when signed out. */
export async function accessToken({ fresh = false } = {}) {
  if (!session) return null;
  if (!fresh && Date.now() < session.expires_at - 60_000) return session.access_token;
  refreshing ??= tokenRequest({ grant_type: "refresh_token", refresh_token: session.refresh_token })
    .catch(() => setSession(null))
    .finally(() => { refreshing = null; });
  await refreshing;
  return session?.access_token ?? null;
}

// This device's clock against the server's, from the first answer's Date
// header: a phone minutes off would otherwise show a hold's countdown (an
// instant set by the server) minutes wrong. Small differences are left
// alone (the header has whole seconds).
let clockOffset = null;
function noteServerClock(r) {
  if (clockOffset !== null) return;
  const server = Date.parse(r.headers.get("date") ?? "");
  if (Number.isNaN(server)) return;
  const skew = server + 500 - Date.now();
  clockOffset = Math.abs(skew) > 2_000 ? skew : 0;
}
/** The server's idea of now (ms since the epoch). */
export const serverNow = () => Date.now() + (clockOffset ?? 0);

/** Calls the API; throws ApiError with the problem+json on failure. */
export async function call(method, path, body, { anonymous = false, raw = false } = {}) {
  const headers = {};
  const token = anonymous ? null : await accessToken();
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method === "POST" && path === "/api/v1/appointments") headers["idempotency-key"] = crypto.randomUUID();
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  noteServerClock(r);
  if (!r.ok) {
    if (r.status === 401 && token) setSession(null);
    throw new ApiError(r.status, await r.json().catch(() => null));
  }
  if (raw) return r;
  return r.status === 204 ? null : r.json();
}

export const get = (path, opts) => call("GET", path, undefined, opts);
export const post = (path, body, opts) => call("POST", path, body ?? {}, opts);
