// Calls from the console's server (route handlers, proxy.ts, server components) to the backend.
//
// TORCHWIRE_API_URL is where: `http://127.0.0.1:8000` under `make run` (uvicorn), or a comma-separated list
// of `unix:/path/web-N.sock` under `make run-prod`, where the console talks to the uvicorn workers
// directly rather than back through nginx (nginx's per-address limits would count every user as the
// console's one address). The public Host, scheme and client address travel along as X-Forwarded-*, so
// the backend's host checks, HTTPS redirect and login limits see the browser's request.
import http from "node:http";

export interface Forwarded {
  host: string | null;
  proto: string | null;
  clientIp: string | null;
}

export interface BackendInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  token?: string;
  forwarded?: Forwarded;
  timeoutMs?: number;
}

let next = 0;

function targets(): string[] {
  const raw = process.env.TORCHWIRE_API_URL || "http://127.0.0.1:8000";
  return raw.split(",").map((part) => part.trim()).filter(Boolean);
}

export function forwardedFrom(headers: Headers): Forwarded {
  const forwardedFor = headers.get("x-forwarded-for");
  return {
    host: headers.get("x-forwarded-host") ?? headers.get("host"),
    proto: headers.get("x-forwarded-proto"),
    clientIp: forwardedFor ? forwardedFor.split(",")[0]!.trim() : null,
  };
}

function requestHeaders(init: BackendInit): Record<string, string> {
  const headers: Record<string, string> = { accept: "application/json", ...init.headers };
  if (init.body !== undefined) headers["content-type"] ??= "application/json";
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  const forwarded = init.forwarded;
  if (forwarded?.clientIp) headers["x-forwarded-for"] = forwarded.clientIp;
  if (forwarded?.proto) headers["x-forwarded-proto"] = forwarded.proto;
  if (forwarded?.host) headers["x-forwarded-host"] = forwarded.host;
  return headers;
}

function overSocket(socketPath: string, path: string, init: BackendInit, headers: Record<string, string>): Promise<Response> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        socketPath,
        path,
        method: init.method ?? "GET",
        headers: { ...headers, host: init.forwarded?.host ?? "localhost" },
        timeout: init.timeoutMs ?? 30_000,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => {
          const out = new Headers();
          for (const [name, value] of Object.entries(response.headers)) {
            if (value !== undefined) out.set(name, Array.isArray(value) ? value.join(", ") : value);
          }
          const status = response.statusCode ?? 502;
          const body = status === 204 || status === 304 ? null : Buffer.concat(chunks);
          resolve(new Response(body, { status, headers: out }));
        });
        response.on("error", reject);
      },
    );
    request.on("timeout", () => request.destroy(new Error("timed out")));
    request.on("error", reject);
    if (init.body !== undefined) request.write(init.body);
    request.end();
  });
}

/** One backend call; tries the next target when one refuses the connection (a worker restarting). */
export async function backendFetch(path: string, init: BackendInit = {}): Promise<Response> {
  const all = targets();
  const headers = requestHeaders(init);
  let lastError: unknown = null;
  for (let attempt = 0; attempt < all.length; attempt += 1) {
    const target = all[(next + attempt) % all.length]!;
    try {
      if (target.startsWith("unix:")) {
        next = (next + attempt + 1) % all.length;
        return await overSocket(target.slice("unix:".length), path, init, headers);
      }
      const url = target.replace(/\/$/, "") + path;
      // Host is the backend's own here (fetch refuses to set it); X-Forwarded-Host carries the public one.
      return await fetch(url, {
        method: init.method ?? "GET",
        headers,
        body: init.body,
        cache: "no-store",
        redirect: "manual",
        signal: AbortSignal.timeout(init.timeoutMs ?? 30_000),
      });
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}
