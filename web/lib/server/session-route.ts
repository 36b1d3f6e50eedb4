// Shared by the /session route handlers.
import { NextResponse, type NextRequest } from "next/server";

import type { ApiErrorInfo } from "@/lib/api/errors";
import { cookieOptions, readSession, secureCookies, SESSION_COOKIE, type Session } from "@/lib/auth/session";
import { forwardedFrom } from "@/lib/server/backend";
import { originAllowed } from "@/lib/server/origin";

export function errorResponse(error: ApiErrorInfo, status = error.status || 502): NextResponse {
  const response = NextResponse.json(
    { error: { code: error.code, message: error.message, details: error.details ?? null } },
    { status, headers: { "cache-control": "no-store" } },
  );
  if (error.requestId) response.headers.set("x-request-id", error.requestId);
  return response;
}

/** The refusal of a request from another origin, or null when it may go on. */
export function refuseCrossOrigin(request: NextRequest): NextResponse | null {
  if (originAllowed(request.headers)) return null;
  return errorResponse(
    { status: 403, code: "bad_origin", message: "this request did not come from a page of this console", details: null, requestId: null },
    403,
  );
}

export async function sessionOf(request: NextRequest): Promise<Session | null> {
  return readSession(request.cookies.get(SESSION_COOKIE)?.value);
}

export function setSessionCookie(response: NextResponse, request: NextRequest, sealed: string, session: Session): void {
  response.cookies.set(SESSION_COOKIE, sealed, cookieOptions(session, secureCookies(forwardedFrom(request.headers))));
}

export function clearSessionCookie(response: NextResponse, request: NextRequest): void {
  response.cookies.set(SESSION_COOKIE, "", cookieOptions(null, secureCookies(forwardedFrom(request.headers))));
}
