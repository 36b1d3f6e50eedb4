/** Where to go after signing in: a path of this console, never another site (`//evil`, `/\evil`, URLs). */
export function safeNextPath(raw: string | null | undefined): string {
  if (!raw || raw.length > 2000) return "/";
  if (!raw.startsWith("/") || raw.startsWith("//") || raw.startsWith("/\\")) return "/";
  if (/[\u0000-\u001f\u007f\\]/.test(raw)) return "/";
  if (raw === "/login" || raw.startsWith("/login?") || raw.startsWith("/session")) return "/";
  return raw;
}
