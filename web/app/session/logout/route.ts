// POST /session/logout: revokes the refresh token at the API and clears the cookie.
import { NextResponse, type NextRequest } from "next/server";

import { revokeSession } from "@/lib/auth/session";
import { forwardedFrom } from "@/lib/server/backend";
import { clearSessionCookie, refuseCrossOrigin, sessionOf } from "@/lib/server/session-route";

export async function POST(request: NextRequest) {
  const refused = refuseCrossOrigin(request);
  if (refused) return refused;
  const session = await sessionOf(request);
  if (session) await revokeSession(session, forwardedFrom(request.headers));
  const response = new NextResponse(null, { status: 204, headers: { "cache-control": "no-store" } });
  clearSessionCookie(response, request);
  return response;
}
