// @vitest-environment node
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { safeNextPath } from "@/lib/auth/next-path";
import { seal, unseal } from "@/lib/auth/seal";
import { readSession, refreshSession, sealSession, type Session } from "@/lib/auth/session";
import { originAllowed } from "@/lib/server/origin";

const SECRET = "x".repeat(40);

function jwt(exp: number): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "HS256" })}.${part({ exp })}.sig`;
}

function session(refresh = "r1"): Session {
  const now = Date.now() / 1000;
  return { v: 1, access: jwt(now + 10), accessExp: now + 10, refresh, refreshExp: now + 3600, user: { username: "ada", role: "member" } };
}

beforeEach(() => {
  vi.stubEnv("TORCHWIRE_CONSOLE_SECRET", SECRET);
  vi.stubEnv("TORCHWIRE_API_URL", "http://backend.test");
});

afterEach(() => {
  vi.unstubAllEnvs();
  vi.unstubAllGlobals();
});

describe("sealing", () => {
  it("round-trips and refuses anything tampered with or sealed with another key", async () => {
    const sealed = await seal({ a: 1 }, SECRET);
    expect(sealed.startsWith("v1.")).toBe(true);
    await expect(unseal(sealed, SECRET)).resolves.toEqual({ a: 1 });
    const flipped = sealed.slice(0, -2) + (sealed.endsWith("A") ? "B" : "A") + sealed.slice(-1);
    await expect(unseal(flipped, SECRET)).resolves.toBeNull();
    await expect(unseal(sealed, "y".repeat(40))).resolves.toBeNull();
    await expect(unseal("v1.", SECRET)).resolves.toBeNull();
    await expect(unseal("not sealed", SECRET)).resolves.toBeNull();
  });

  it("never shows the refresh token in the cookie's text", async () => {
    const sealed = await sealSession(session("the-refresh-token"));
    expect(sealed).not.toContain("the-refresh-token");
    expect(Buffer.from(sealed.slice(3), "base64url").toString("latin1")).not.toContain("the-refresh-token");
    await expect(readSession(sealed)).resolves.toMatchObject({ refresh: "the-refresh-token" });
  });

  it("refuses to work without a long enough secret", async () => {
    vi.stubEnv("TORCHWIRE_CONSOLE_SECRET", "short");
    await expect(sealSession(session())).rejects.toThrow(/TORCHWIRE_CONSOLE_SECRET/);
  });

  it("treats an expired refresh token as no session", async () => {
    const old = { ...session(), refreshExp: Date.now() / 1000 - 1 };
    await expect(readSession(await sealSession(old))).resolves.toBeNull();
  });
});

describe("refreshSession", () => {
  it("is single-flight per refresh token: two tabs refreshing at once get the same new tokens", async () => {
    const now = Date.now() / 1000;
    const pair = { access: jwt(now + 300), refresh: jwt(now + 86400) };
    let calls = 0;
    vi.stubGlobal("fetch", vi.fn(async (url: string) => {
      if (url.endsWith("/auth/token/refresh")) {
        calls += 1;
        await new Promise((r) => setTimeout(r, 20));
        // The backend's refresh tokens are single use: a second use would be refused.
        if (calls > 1) return new Response('{"error":{"code":"unauthorized","message":"used"}}', { status: 401 });
        return new Response(JSON.stringify(pair), { status: 200 });
      }
      return new Response(JSON.stringify({ username: "ada", role: "member", email: "", api_keys: [] }), { status: 200 });
    }));
    const old = session("single-use");
    const forwarded = { host: "h", proto: "http", clientIp: "1.2.3.4" };
    const [a, b] = await Promise.all([refreshSession(old, forwarded), refreshSession(old, forwarded)]);
    // A request still in flight with the old cookie, a moment later, gets the same answer too.
    const c = await refreshSession(old, forwarded);
    expect(calls).toBe(1);
    for (const result of [a, b, c]) expect(result).toMatchObject({ ok: true, session: { access: pair.access, refresh: pair.refresh } });
  });

  it("says 'expired' when the backend refuses the refresh token", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => new Response('{"error":{"code":"unauthorized","message":"blacklisted"}}', { status: 401 })));
    await expect(refreshSession(session("revoked"), { host: null, proto: null, clientIp: null })).resolves.toMatchObject({ ok: false, expired: true });
  });

  it("does not call a refused connection 'expired' (the API is down, the session is fine)", async () => {
    vi.stubGlobal("fetch", vi.fn(async () => {
      throw new TypeError("fetch failed");
    }));
    await expect(refreshSession(session("down"), { host: null, proto: null, clientIp: null })).resolves.toMatchObject({ ok: false, expired: false });
  });
});

describe("originAllowed", () => {
  const headers = (h: Record<string, string>) => new Headers(h);
  it("accepts this origin only", () => {
    expect(originAllowed(headers({ origin: "http://127.0.0.1:8000", host: "127.0.0.1:8000" }))).toBe(true);
    expect(originAllowed(headers({ origin: "https://tw.example", host: "tw.example", "x-forwarded-proto": "https" }))).toBe(true);
    expect(originAllowed(headers({ origin: "http://tw.example", host: "tw.example", "x-forwarded-proto": "https" }))).toBe(false);
    expect(originAllowed(headers({ origin: "https://evil.example", host: "tw.example" }))).toBe(false);
    expect(originAllowed(headers({ host: "tw.example" }))).toBe(false);
    expect(originAllowed(headers({ origin: "null", host: "tw.example" }))).toBe(false);
    expect(originAllowed(headers({ origin: "http://tw.example", host: "tw.example", "sec-fetch-site": "cross-site" }))).toBe(false);
  });
});

describe("safeNextPath", () => {
  it("keeps paths of this console and nothing else", () => {
    expect(safeNextPath("/models/iris?tab=history")).toBe("/models/iris?tab=history");
    for (const bad of ["//evil.example", "/\\evil.example", "https://evil.example", "javascript:alert(1)", "/login", "/session/logout", "/x\ny", null, ""]) {
      expect(safeNextPath(bad)).toBe("/");
    }
  });
});
