/** Expiry (Unix seconds) of a JWT, read without verifying it: the server that issued it verifies it. */
export function jwtExpiry(token: string): number | null {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const payload: unknown = JSON.parse(json);
    if (payload && typeof payload === "object" && typeof (payload as { exp?: unknown }).exp === "number") {
      return (payload as { exp: number }).exp;
    }
  } catch {
    // Not a JWT.
  }
  return null;
}
