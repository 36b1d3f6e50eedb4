// The API from server components, with the signed-in user's access token from the sealed cookie.
// Answers are results, not exceptions: a page renders the API's message and request id in place
// (an exception thrown by a server component reaches the browser as an anonymous digest).
import { cookies, headers } from "next/headers";
import { redirect } from "next/navigation";
import { cache } from "react";

import { parseErrorBody, type ApiErrorInfo } from "@/lib/api/errors";
import { readSession, SESSION_COOKIE, type Session } from "@/lib/auth/session";
import { backendFetch, forwardedFrom, type Forwarded } from "@/lib/server/backend";

export type Result<T> = { ok: true; data: T; requestId: string | null } | { ok: false; error: ApiErrorInfo };

export const getSession = cache(async (): Promise<Session | null> => {
  const store = await cookies();
  return readSession(store.get(SESSION_COOKIE)?.value);
});

const forwarded = cache(async (): Promise<Forwarded> => forwardedFrom(await headers()));

async function toLogin(): Promise<never> {
  const path = (await headers()).get("x-tw-path") ?? "/";
  redirect(path === "/" ? "/login" : `/login?next=${encodeURIComponent(path)}`);
}

export async function requireSession(): Promise<Session> {
  const session = await getSession();
  if (!session) return toLogin();
  return session;
}

async function call<T>(path: string, init: { method?: string; body?: string; auth?: boolean }): Promise<Result<T>> {
  const session = init.auth === false ? null : await requireSession();
  let response: Response;
  try {
    response = await backendFetch(path, { method: init.method, body: init.body, token: session?.access, forwarded: await forwarded() });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return { ok: false, error: { status: 502, code: "bad_gateway", message: `The API server is not answering (${reason}).`, details: null, requestId: null } };
  }
  const requestId = response.headers.get("x-request-id");
  if (response.status === 401 && session) return toLogin();
  const text = await response.text();
  if (!response.ok) return { ok: false, error: parseErrorBody(response.status, text, requestId) };
  try {
    return { ok: true, data: (text ? JSON.parse(text) : null) as T, requestId };
  } catch {
    return { ok: false, error: { status: 502, code: "bad_gateway", message: "The API answered something that is not JSON.", details: null, requestId } };
  }
}

export function apiGet<T>(path: string): Promise<Result<T>> {
  return call<T>(path, {});
}

/** A backend path that needs no token (/readyz). Any status is a result: readiness reports 503 with a body. */
export async function publicGet<T>(path: string): Promise<Result<T>> {
  try {
    const response = await backendFetch(path, { forwarded: await forwarded(), timeoutMs: 10_000 });
    const text = await response.text();
    try {
      return { ok: true, data: JSON.parse(text) as T, requestId: response.headers.get("x-request-id") };
    } catch {
      return { ok: false, error: parseErrorBody(response.status, text, response.headers.get("x-request-id")) };
    }
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return { ok: false, error: { status: 502, code: "bad_gateway", message: `The API server is not answering (${reason}).`, details: null, requestId: null } };
  }
}

export function enc(part: string): string {
  return encodeURIComponent(part);
}
