// The playground's /ws/v1/infer socket: opened with a ticket on first use, answers matched by id, and
// opened again (fresh ticket) when it was closed (4401 when the credential expired, or any drop).
import { wsTicket, wsUrl } from "@/lib/realtime/live";

interface Pending {
  resolve: (body: Record<string, unknown>) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class InferSocket {
  private socket: WebSocket | null = null;
  private opening: Promise<WebSocket> | null = null;
  private pending = new Map<string, Pending>();
  private counter = 0;

  private open(): Promise<WebSocket> {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) return Promise.resolve(this.socket);
    if (!this.opening) {
      this.opening = (async () => {
        const ticket = await wsTicket();
        const socket = new WebSocket(`${wsUrl("/ws/v1/infer")}?ticket=${encodeURIComponent(ticket)}`);
        await new Promise<void>((resolve, reject) => {
          socket.onopen = () => resolve();
          socket.onclose = (event) => reject(new Error(`the websocket closed (${event.code}) before it opened`));
        });
        socket.onmessage = (event) => this.onMessage(event.data);
        socket.onclose = (event) => {
          if (this.socket === socket) this.socket = null;
          for (const [id, p] of this.pending) {
            clearTimeout(p.timer);
            p.reject(new Error(event.code === 4401 ? "the websocket's credential expired; send again" : `the websocket closed (${event.code})`));
            this.pending.delete(id);
          }
        };
        this.socket = socket;
        return socket;
      })().finally(() => {
        this.opening = null;
      });
    }
    return this.opening;
  }

  private onMessage(raw: unknown): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(String(raw)) as Record<string, unknown>;
    } catch {
      return;
    }
    const id = typeof message.id === "string" ? message.id : null;
    const pending = id ? this.pending.get(id) : undefined;
    if (!id || !pending) return;
    clearTimeout(pending.timer);
    this.pending.delete(id);
    pending.resolve(message);
  }

  /** Sends one request (the V2 document plus `model`, optional `version`); resolves with the answer, an error answer included. */
  async request(body: Record<string, unknown>, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const socket = await this.open();
    const id = `pg-${Date.now().toString(36)}-${++this.counter}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`no answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      socket.send(JSON.stringify({ ...body, id }));
    });
  }

  close(): void {
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, "done");
  }
}
