// Mutating route handlers answer only requests a page of this origin sent: a browser always sends
// Origin on a POST, and a cross-site page cannot make it name us. (The session cookie is SameSite=Strict
// as well; this is the second lock.) TORCHWIRE_CONSOLE_ORIGINS adds origins, comma-separated.
export function originAllowed(headers: Headers): boolean {
  const origin = headers.get("origin");
  if (!origin || origin === "null") return false;
  if (headers.get("sec-fetch-site") === "cross-site") return false;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  const extra = (process.env.TORCHWIRE_CONSOLE_ORIGINS ?? "").split(",").map((o) => o.trim()).filter(Boolean);
  if (extra.includes(url.origin)) return true;
  const host = headers.get("x-forwarded-host") ?? headers.get("host");
  const proto = headers.get("x-forwarded-proto");
  if (!host || url.host !== host) return false;
  return !proto || url.protocol === `${proto}:`;
}
