// The console's session, on the server side: the refresh token lives only in the sealed, httpOnly,
// SameSite=Strict cookie `tw_session` (with the current access token, which server components use).
// The browser's scripts never see the refresh token; they get a short-lived access token from
// POST /session/refresh and keep it in memory.
//
// Refresh tokens are single use: each refresh consumes the token it presents. Two tabs (or a page load and
// a tab's background refresh) presenting the same token at once must not sign the user out, so refreshes
// are single-flight per token in this process, and the result is kept for a grace period for requests
// that were already in flight with the old cookie.
import { parseErrorBody, type ApiErrorInfo } from "@/lib/api/errors";
import type { Me, TokenPair } from "@/lib/api/types";
import { jwtExpiry } from "@/lib/auth/jwt";
import { seal, unseal } from "@/lib/auth/seal";
import { backendFetch, type Forwarded } from "@/lib/server/backend";

export const SESSION_COOKIE = "tw_session";
/** The proxy and /session/refresh rotate the tokens when the access token has less than this left. */
export const REFRESH_MARGIN_SECONDS = 150;
const GRACE_MS = 60_000;

export interface SessionUser {
  username: string;
  role: string;
}

export interface Session {
  v: 1;
  access: string;
  accessExp: number;
  refresh: string;
  refreshExp: number;
  user: SessionUser;
}

export type SessionResult = { ok: true; session: Session } | { ok: false; expired: boolean; error: ApiErrorInfo };

export function consoleSecret(): string {
  const secret = process.env.TORCHWIRE_CONSOLE_SECRET ?? "";
  if (secret.length < 32) {
    throw new Error("TORCHWIRE_CONSOLE_SECRET must be set to at least 32 characters (the launcher sets it)");
  }
  return secret;
}

export async function readSession(sealed: string | undefined | null): Promise<Session | null> {
  if (!sealed) return null;
  const session = await unseal<Session>(sealed, consoleSecret());
  if (!session || session.v !== 1 || typeof session.refresh !== "string" || typeof session.access !== "string") {
    return null;
  }
  if (session.refreshExp * 1000 <= Date.now()) return null;
  return session;
}

export async function sealSession(session: Session): Promise<string> {
  return seal(session, consoleSecret());
}

export function secureCookies(forwarded: Forwarded): boolean {
  return process.env.TORCHWIRE_CONSOLE_SECURE_COOKIES === "true" || forwarded.proto === "https";
}

export function cookieOptions(session: Session | null, secure: boolean) {
  return {
    httpOnly: true,
    sameSite: "strict" as const,
    secure,
    path: "/",
    maxAge: session ? Math.max(0, Math.floor(session.refreshExp - Date.now() / 1000)) : 0,
  };
}

export function accessSecondsLeft(session: Session): number {
  return session.accessExp - Date.now() / 1000;
}

/** What the browser may know: the access token (for its own API calls) and who is signed in. */
export function publicSession(session: Session) {
  return { access: session.access, expires_at: session.accessExp, user: session.user };
}

async function errorOf(response: Response): Promise<ApiErrorInfo> {
  return parseErrorBody(response.status, await response.text().catch(() => ""), response.headers.get("x-request-id"));
}

function unreachable(error: unknown): ApiErrorInfo {
  const reason = error instanceof Error ? error.message : String(error);
  return { status: 502, code: "bad_gateway", message: `The API server is not answering (${reason}).`, details: null, requestId: null };
}

async function sessionFromPair(pair: TokenPair, forwarded: Forwarded): Promise<SessionResult> {
  const me = await backendFetch("/api/v1/me", { token: pair.access, forwarded });
  if (!me.ok) return { ok: false, expired: me.status === 401, error: await errorOf(me) };
  const user = (await me.json()) as Me;
  const accessExp = jwtExpiry(pair.access) ?? Date.now() / 1000 + 300;
  const refreshExp = jwtExpiry(pair.refresh) ?? Date.now() / 1000 + 86_400;
  return {
    ok: true,
    session: { v: 1, access: pair.access, accessExp, refresh: pair.refresh, refreshExp, user: { username: user.username, role: user.role } },
  };
}

export async function obtainSession(username: string, password: string, forwarded: Forwarded): Promise<SessionResult> {
  try {
    const response = await backendFetch("/api/v1/auth/token", {
      method: "POST",
      body: JSON.stringify({ username, password }),
      forwarded,
    });
    if (!response.ok) return { ok: false, expired: false, error: await errorOf(response) };
    return await sessionFromPair((await response.json()) as TokenPair, forwarded);
  } catch (error) {
    return { ok: false, expired: false, error: unreachable(error) };
  }
}

interface Flight {
  promise: Promise<SessionResult>;
  settledAt: number | null;
}

// Shared by proxy.ts and the route handlers of this process (they may load this module separately).
const flights: Map<string, Flight> = ((globalThis as { __twRefreshFlights?: Map<string, Flight> }).__twRefreshFlights ??=
  new Map());

async function rotate(session: Session, forwarded: Forwarded): Promise<SessionResult> {
  try {
    const response = await backendFetch("/api/v1/auth/token/refresh", {
      method: "POST",
      body: JSON.stringify({ refresh: session.refresh }),
      forwarded,
    });
    if (!response.ok) {
      return { ok: false, expired: response.status === 401 || response.status === 403, error: await errorOf(response) };
    }
    return await sessionFromPair((await response.json()) as TokenPair, forwarded);
  } catch (error) {
    return { ok: false, expired: false, error: unreachable(error) };
  }
}

/** New tokens for `session`, single-flight per refresh token (see the module's comment). */
export function refreshSession(session: Session, forwarded: Forwarded): Promise<SessionResult> {
  const now = Date.now();
  for (const [token, flight] of flights) {
    if (flight.settledAt !== null && now - flight.settledAt > GRACE_MS) flights.delete(token);
  }
  const existing = flights.get(session.refresh);
  if (existing) return existing.promise;
  const flight: Flight = { promise: rotate(session, forwarded), settledAt: null };
  flight.promise.then(
    (result) => {
      flight.settledAt = Date.now();
      // A failure that was not the token's fault (the API was down) may be retried at once.
      if (!result.ok && !result.expired) flights.delete(session.refresh);
    },
    () => flights.delete(session.refresh),
  );
  flights.set(session.refresh, flight);
  return flight.promise;
}

export async function revokeSession(session: Session, forwarded: Forwarded): Promise<void> {
  try {
    await backendFetch("/api/v1/auth/token/revoke", { method: "POST", body: JSON.stringify({ refresh: session.refresh }), forwarded });
  } catch {
    // The cookie is cleared anyway; the refresh token expires by itself within a day.
  }
}
