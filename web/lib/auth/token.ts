// The browser's access token: in memory only (never in storage), fetched from POST /session/refresh,
// single-flight within the tab and serialised across tabs with the Web Locks API, so two tabs never
// present the one-use refresh token at once (the server also joins concurrent refreshes of a token).
import { ApiError } from "@/lib/api/errors";
import { useSession, type SessionUser } from "@/lib/auth/store";

export interface AccessToken {
  access: string;
  expiresAt: number; // ms since the epoch
}

interface SessionAnswer {
  access: string;
  expires_at: number;
  user: SessionUser;
}

let current: AccessToken | null = null;
let inflight: Promise<AccessToken> | null = null;
let reauth: { promise: Promise<void>; resolve: () => void } | null = null;

export class SessionExpired extends Error {
  constructor() {
    super("the session has ended");
    this.name = "SessionExpired";
  }
}

/** Takes a session answer (from /session/login or /session/refresh) into memory and the session store. */
export function acceptSession(answer: SessionAnswer): AccessToken {
  current = { access: answer.access, expiresAt: answer.expires_at * 1000 };
  const store = useSession.getState();
  if (store.status === "expired") store.resume(answer.user);
  else store.setUser(answer.user);
  if (reauth) {
    reauth.resolve();
    reauth = null;
  }
  return current;
}

export function forgetToken(): void {
  current = null;
}

function waitForSignIn(): Promise<void> {
  if (!reauth) {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    reauth = { promise, resolve };
  }
  useSession.getState().expire();
  return reauth.promise;
}

async function fetchToken(): Promise<AccessToken> {
  const run = async (): Promise<AccessToken> => {
    let response: Response;
    try {
      response = await fetch("/session/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (error) {
      throw ApiError.network(error);
    }
    if (response.status === 401) throw new SessionExpired();
    if (!response.ok) throw await ApiError.fromResponse(response);
    return acceptSession((await response.json()) as SessionAnswer);
  };
  const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
  return locks ? locks.request("torchwire-session-refresh", run) : run();
}

async function renew(): Promise<AccessToken> {
  for (;;) {
    try {
      return await fetchToken();
    } catch (error) {
      if (!(error instanceof SessionExpired)) throw error;
      if (useSession.getState().status === "signed_out") throw new ApiError({ status: 401, code: "signed_out", message: "signed out", details: null, requestId: null });
      await waitForSignIn();
      if (current && current.expiresAt - Date.now() > 30_000) return current;
    }
  }
}

/**
 * An access token with at least `minValidityMs` left (a websocket ticket asks for more: the socket lives as
 * long as the token that asked for it). `force` renews even when the one in memory looks fine (after a 401).
 */
export async function getAccessToken({ minValidityMs = 30_000, force = false } = {}): Promise<string> {
  if (!force && current && current.expiresAt - Date.now() > minValidityMs) return current.access;
  if (force) current = null;
  if (!inflight) {
    inflight = renew().finally(() => {
      inflight = null;
    });
  }
  return (await inflight).access;
}
