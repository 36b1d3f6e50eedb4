// POST /session/refresh: the access token for the browser's memory. Returns the cookie's current one
// while it has a while to live, else rotates the tokens (single-flight, lib/auth/session.ts).
// 401 when the session is gone: the page asks the user to sign in again without leaving it.
// {"probe": true} (the sign-in page asking whether a session exists) answers 204 instead of 401.
import { NextResponse, type NextRequest } from "next/server";

import { accessSecondsLeft, publicSession, REFRESH_MARGIN_SECONDS, refreshSession, sealSession } from "@/lib/auth/session";
import { forwardedFrom } from "@/lib/server/backend";
import { clearSessionCookie, errorResponse, refuseCrossOrigin, sessionOf, setSessionCookie } from "@/lib/server/session-route";

const EXPIRED = { status: 401, code: "session_expired", message: "your session has ended; sign in again", details: null, requestId: null };

export async function POST(request: NextRequest) {
  const refused = refuseCrossOrigin(request);
  if (refused) return refused;
  const session = await sessionOf(request);
  if (!session) {
    const probe = await request.json().then((body: { probe?: unknown }) => body?.probe === true).catch(() => false);
    const response = probe ? new NextResponse(null, { status: 204, headers: { "cache-control": "no-store" } }) : errorResponse(EXPIRED);
    if (request.cookies.has("tw_session")) clearSessionCookie(response, request);
    return response;
  }
  if (accessSecondsLeft(session) > REFRESH_MARGIN_SECONDS) {
    return NextResponse.json(publicSession(session), { headers: { "cache-control": "no-store" } });
  }
  const result = await refreshSession(session, forwardedFrom(request.headers));
  if (!result.ok) {
    const response = errorResponse(result.expired ? EXPIRED : result.error);
    if (result.expired) clearSessionCookie(response, request);
    return response;
  }
  const response = NextResponse.json(publicSession(result.session), { headers: { "cache-control": "no-store" } });
  setSessionCookie(response, request, await sealSession(result.session), result.session);
  return response;
}
