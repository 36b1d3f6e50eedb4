// The tab's one realtime connection and its status, for components (components/realtime/use-topic.ts).
import { create } from "zustand";

import { api } from "@/lib/api/client";
import { RealtimeClient, type ConnectionStatus } from "@/lib/realtime/client";

export const useConnection = create<{ status: ConnectionStatus }>()(() => ({ status: "idle" }));

let client: RealtimeClient | null = null;

export function wsUrl(path: string): string {
  return `${window.location.protocol === "https:" ? "wss" : "ws"}://${window.location.host}${path}`;
}

/** A single-use websocket ticket; the socket lives as long as the token that asked, so ask with a fresh one. */
export async function wsTicket(): Promise<string> {
  const answer = await api<{ ticket: string }>("/api/v1/realtime/tickets", { method: "POST", minValidityMs: 120_000 });
  return answer.ticket;
}

export function realtime(): RealtimeClient {
  if (!client) {
    client = new RealtimeClient({
      url: () => wsUrl("/ws/v1/events"),
      ticket: wsTicket,
      onStatus: (status) => useConnection.setState({ status }),
    });
  }
  return client;
}

export function stopRealtime(): void {
  client?.stop();
  client = null;
  useConnection.setState({ status: "idle" });
}
