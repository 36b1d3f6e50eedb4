// Runs before every page: a fresh CSP nonce, the sign-in gate, and the token refresh server components
// rely on (they read the access token from the sealed cookie, so it must not be about to expire).
import { NextResponse, type NextRequest } from "next/server";

import { safeNextPath } from "@/lib/auth/next-path";
import {
  accessSecondsLeft,
  cookieOptions,
  readSession,
  REFRESH_MARGIN_SECONDS,
  refreshSession,
  sealSession,
  secureCookies,
  SESSION_COOKIE,
} from "@/lib/auth/session";
import { forwardedFrom } from "@/lib/server/backend";

export function contentSecurityPolicy(nonce: string, host: string | null, proto: string | null): string {
  const dev = process.env.NODE_ENV === "development";
  const ws = host ? ` ${proto === "https" ? "wss" : "ws"}://${host}` : "";
  return [
    "default-src 'self'",
    `script-src 'self' 'nonce-${nonce}' 'strict-dynamic'${dev ? " 'unsafe-eval'" : ""}`,
    // Radix positions popovers with inline styles.
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    `connect-src 'self'${ws}`,
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join("; ");
}

function withCookie(header: string | null, name: string, value: string): string {
  const kept = (header ?? "").split(/;\s*/).filter((part) => part && !part.startsWith(`${name}=`));
  return [...kept, `${name}=${value}`].join("; ");
}

export async function proxy(request: NextRequest) {
  const nonce = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64");
  const forwarded = forwardedFrom(request.headers);
  const csp = contentSecurityPolicy(nonce, forwarded.host, forwarded.proto);
  const url = request.nextUrl;
  const search = new URLSearchParams(url.search);
  search.delete("_rsc");
  const here = url.pathname + (search.size ? `?${search}` : "");

  const sealed = request.cookies.get(SESSION_COOKIE)?.value;
  let session = await readSession(sealed);
  let renewed: string | null = null;
  let expired = false;
  if (session && accessSecondsLeft(session) < REFRESH_MARGIN_SECONDS) {
    const result = await refreshSession(session, forwarded);
    if (result.ok) {
      session = result.session;
      renewed = await sealSession(session);
    } else if (result.expired) {
      session = null;
      expired = true;
    }
    // Otherwise the API is unreachable: render with the old token; pages show the API's error.
  }

  const secure = secureCookies(forwarded);
  if (url.pathname === "/login") {
    if (session) {
      const target = new URL(safeNextPath(url.searchParams.get("next")), request.url);
      const response = NextResponse.redirect(target, 303);
      if (renewed) response.cookies.set(SESSION_COOKIE, renewed, cookieOptions(session, secure));
      return response;
    }
  } else if (!session) {
    const login = new URL("/login", request.url);
    if (here !== "/") login.searchParams.set("next", here);
    if (expired) login.searchParams.set("expired", "1");
    const response = NextResponse.redirect(login, 303);
    if (sealed) response.cookies.set(SESSION_COOKIE, "", cookieOptions(null, secure));
    return response;
  }

  const headers = new Headers(request.headers);
  headers.set("x-nonce", nonce);
  headers.set("content-security-policy", csp);
  headers.set("x-tw-path", here);
  if (renewed) headers.set("cookie", withCookie(request.headers.get("cookie"), SESSION_COOKIE, renewed));
  const response = NextResponse.next({ request: { headers } });
  response.headers.set("content-security-policy", csp);
  response.headers.set("cache-control", "private, no-store");
  if (renewed && session) response.cookies.set(SESSION_COOKIE, renewed, cookieOptions(session, secure));
  if (sealed && !session) response.cookies.set(SESSION_COOKIE, "", cookieOptions(null, secure));
  return response;
}

export const config = {
  // Pages only: assets, route handlers (they check their own session) and icons skip it.
  matcher: ["/((?!_next/static|_next/image|session/|favicon.ico|icon.svg|robots.txt).*)"],
};
