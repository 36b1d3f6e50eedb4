// Signing in and out from the browser, through the console's /session route handlers.
import { ApiError } from "@/lib/api/errors";
import { acceptSession, forgetToken } from "@/lib/auth/token";
import { useSession } from "@/lib/auth/store";
import { stopRealtime } from "@/lib/realtime/live";

export async function signIn(username: string, password: string): Promise<void> {
  let response: Response;
  try {
    response = await fetch("/session/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username, password }),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (error) {
    throw ApiError.network(error);
  }
  if (!response.ok) throw await ApiError.fromResponse(response);
  acceptSession(await response.json());
}

export async function signOut(): Promise<void> {
  useSession.getState().signOut();
  stopRealtime();
  forgetToken();
  try {
    await fetch("/session/logout", { method: "POST", headers: { "content-type": "application/json" }, body: "{}", credentials: "same-origin" });
  } finally {
    // A full load: nothing of the signed-in pages stays in memory.
    window.location.replace("/login");
  }
}
