// POST /session/login {username, password}: signs in through /api/v1/auth/token on the server; the
// refresh token goes into the sealed cookie, the browser gets the access token and who it is.
import { NextResponse, type NextRequest } from "next/server";

import { obtainSession, publicSession, sealSession } from "@/lib/auth/session";
import { forwardedFrom } from "@/lib/server/backend";
import { errorResponse, refuseCrossOrigin, setSessionCookie } from "@/lib/server/session-route";

export async function POST(request: NextRequest) {
  const refused = refuseCrossOrigin(request);
  if (refused) return refused;
  let body: unknown;
  try {
    body = await request.json();
  } catch {
    body = null;
  }
  const { username, password } = (body ?? {}) as { username?: unknown; password?: unknown };
  if (typeof username !== "string" || typeof password !== "string" || !username || !password) {
    return errorResponse({
      status: 422,
      code: "validation_error",
      message: "enter your username and password",
      details: [
        ...(typeof username === "string" && username ? [] : [{ field: "username", msg: "required" }]),
        ...(typeof password === "string" && password ? [] : [{ field: "password", msg: "required" }]),
      ],
      requestId: null,
    });
  }
  const result = await obtainSession(username, password, forwardedFrom(request.headers));
  if (!result.ok) return errorResponse(result.error);
  const response = NextResponse.json(publicSession(result.session), { headers: { "cache-control": "no-store" } });
  setSessionCookie(response, request, await sealSession(result.session), result.session);
  return response;
}
