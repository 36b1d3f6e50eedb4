import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { api } from "@/lib/api/client";
import { ApiError, fieldErrors, parseErrorBody } from "@/lib/api/errors";
import { useSession } from "@/lib/auth/store";
import { acceptSession, forgetToken, getAccessToken } from "@/lib/auth/token";

const user = { username: "ada", role: "maintainer" };

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

function session(access: string, secondsLeft = 300) {
  return { access, expires_at: Date.now() / 1000 + secondsLeft, user };
}

let fetchMock: ReturnType<typeof vi.fn>;

beforeEach(() => {
  forgetToken();
  useSession.setState({ user: null, status: "active" });
  fetchMock = vi.fn();
  vi.stubGlobal("fetch", fetchMock);
});

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("ApiError", () => {
  it("reads the envelope with its request id", async () => {
    const response = json({ error: { code: "conflict", message: "a model named 'x' already exists", details: null } }, 409, { "x-request-id": "req-1" });
    const error = await ApiError.fromResponse(response);
    expect(error).toMatchObject({ status: 409, code: "conflict", message: "a model named 'x' already exists", requestId: "req-1" });
  });

  it("reads V2's {error} and anything else without losing the status", () => {
    expect(parseErrorBody(400, '{"error": "bad shape"}', null)).toMatchObject({ status: 400, message: "bad shape" });
    expect(parseErrorBody(502, "<html>Bad gateway</html>", "r")).toMatchObject({ status: 502, message: "The server is not answering.", requestId: "r" });
    expect(parseErrorBody(418, "", null).message).toBe("The server answered 418.");
  });

  it("maps field details to the fields they name", () => {
    expect(fieldErrors([{ loc: ["body", "payload", "max_batch_size"], msg: "must be >= 1" }, { field: "device", msg: "bad" }])).toEqual({
      max_batch_size: "must be >= 1",
      device: "bad",
    });
    expect(fieldErrors("nope")).toEqual({});
  });
});

describe("api()", () => {
  it("attaches the in-memory access token and parses JSON", async () => {
    acceptSession(session("tok-1"));
    fetchMock.mockResolvedValueOnce(json([{ name: "iris" }]));
    await expect(api("/api/v1/models")).resolves.toEqual([{ name: "iris" }]);
    const [url, init] = fetchMock.mock.calls[0]!;
    expect(url).toBe("/api/v1/models");
    expect(init.headers.authorization).toBe("Bearer tok-1");
  });

  it("sends JSON bodies and returns undefined for 204", async () => {
    acceptSession(session("tok-1"));
    fetchMock.mockResolvedValueOnce(new Response(null, { status: 204 }));
    await expect(api("/api/v1/auth/api-keys/abc", { method: "DELETE" })).resolves.toBeUndefined();
    fetchMock.mockResolvedValueOnce(json({ ok: true }, 201));
    await api("/api/v1/models", { method: "POST", json: { name: "x" } });
    const init = fetchMock.mock.calls[1]![1];
    expect(init.body).toBe('{"name":"x"}');
    expect(init.headers["content-type"]).toBe("application/json");
  });

  it("renews the token once on 401 and retries", async () => {
    acceptSession(session("stale"));
    fetchMock
      .mockResolvedValueOnce(json({ error: { code: "unauthorized", message: "expired" } }, 401))
      .mockResolvedValueOnce(json(session("fresh")))
      .mockResolvedValueOnce(json({ ok: 1 }));
    await expect(api("/api/v1/me")).resolves.toEqual({ ok: 1 });
    expect(fetchMock.mock.calls.map((c) => c[0])).toEqual(["/api/v1/me", "/session/refresh", "/api/v1/me"]);
    expect(fetchMock.mock.calls[2]![1].headers.authorization).toBe("Bearer fresh");
  });

  it("throws the API's error with the request id", async () => {
    acceptSession(session("tok"));
    fetchMock.mockResolvedValueOnce(json({ error: { code: "forbidden", message: "no", details: null } }, 403, { "x-request-id": "abc" }));
    await expect(api("/api/v1/models/x/rollback", { method: "POST" })).rejects.toMatchObject({ status: 403, code: "forbidden", requestId: "abc" });
  });

  it("turns a network failure into an ApiError", async () => {
    acceptSession(session("tok"));
    fetchMock.mockRejectedValueOnce(new TypeError("Failed to fetch"));
    await expect(api("/api/v1/models")).rejects.toMatchObject({ status: 0, code: "network_error" });
  });
});

describe("getAccessToken()", () => {
  it("refreshes single-flight: concurrent callers share one /session/refresh", async () => {
    let release!: (r: Response) => void;
    fetchMock.mockReturnValueOnce(new Promise<Response>((resolve) => (release = resolve)));
    const waiting = Promise.all([getAccessToken(), getAccessToken(), getAccessToken()]);
    release(json(session("one")));
    await expect(waiting).resolves.toEqual(["one", "one", "one"]);
    expect(fetchMock).toHaveBeenCalledTimes(1);
    expect(useSession.getState().user).toEqual(user);
  });

  it("reuses a token with time left and renews one about to expire", async () => {
    acceptSession(session("long", 200));
    await expect(getAccessToken()).resolves.toBe("long");
    expect(fetchMock).not.toHaveBeenCalled();
    fetchMock.mockResolvedValueOnce(json(session("renewed")));
    // 200 s left is enough even for a websocket ticket (120 s).
    await expect(getAccessToken({ minValidityMs: 120_000 })).resolves.toBe("long");
    acceptSession(session("short", 10));
    await expect(getAccessToken()).resolves.toBe("renewed");
  });

  it("waits for the user to sign in again when the session has ended, then goes on", async () => {
    fetchMock.mockResolvedValueOnce(json({ error: { code: "session_expired", message: "ended" } }, 401));
    const pending = getAccessToken();
    await vi.waitFor(() => expect(useSession.getState().status).toBe("expired"));
    // The re-sign-in dialog's /session/login answer arrives:
    acceptSession(session("after-sign-in"));
    await expect(pending).resolves.toBe("after-sign-in");
    expect(useSession.getState().status).toBe("active");
  });

  it("serialises refreshes across tabs with the Web Locks API when the browser has it", async () => {
    const request = vi.fn((_name: string, run: () => Promise<unknown>) => run());
    vi.stubGlobal("navigator", { locks: { request } });
    fetchMock.mockResolvedValueOnce(json(session("locked")));
    await expect(getAccessToken()).resolves.toBe("locked");
    expect(request).toHaveBeenCalledWith("torchwire-session-refresh", expect.any(Function));
  });
});
