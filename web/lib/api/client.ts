// The API from the browser: same origin, the in-memory access token attached, one renewal and retry on
// 401, and every failure an ApiError carrying the API's message and the request id.
import { ApiError } from "@/lib/api/errors";
import { getAccessToken } from "@/lib/auth/token";

export interface RequestOptions {
  method?: string;
  json?: unknown;
  body?: BodyInit;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** The token must live at least this long (a websocket ticket inherits its expiry). */
  minValidityMs?: number;
}

export async function apiResponse(path: string, options: RequestOptions = {}): Promise<Response> {
  const send = async (token: string): Promise<Response> => {
    const headers: Record<string, string> = { accept: "application/json", ...options.headers, authorization: `Bearer ${token}` };
    let body = options.body;
    if (options.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    try {
      return await fetch(path, { method: options.method ?? (body ? "POST" : "GET"), headers, body, signal: options.signal, cache: "no-store" });
    } catch (error) {
      if (error instanceof DOMException && error.name === "AbortError") throw error;
      throw ApiError.network(error);
    }
  };
  let response = await send(await getAccessToken({ minValidityMs: options.minValidityMs }));
  if (response.status === 401) response = await send(await getAccessToken({ force: true }));
  return response;
}

export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const response = await apiResponse(path, options);
  if (!response.ok) throw await ApiError.fromResponse(response);
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export function path(template: string, params: Record<string, string | number>): string {
  return template.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(String(params[name] ?? "")));
}
