// One websocket per tab to /ws/v1/events (docs/events.md), shared by every component that listens.
//
// Each connection is opened with a fresh single-use ticket. Every topic keeps the position (epoch, seq)
// of the last event it processed; after any disconnect the client reconnects and resubscribes with that
// position, so it gets exactly the events it missed, or a `reset` with a snapshot when the log cannot give
// them. Events at or before the position (a replay overlapping what was already seen) are dropped, so a
// listener sees each seq of an epoch once, in order. Close code 4401 (the credential expired) reconnects
// at once with a new ticket; other drops back off exponentially; 4404 stops.

export interface BusEvent {
  type: string;
  topic: string;
  seq: number;
  epoch: string;
  ts: number;
  data: Record<string, unknown>;
}

export interface ResetMessage {
  type: "reset";
  topic: string;
  last_seq: number;
  epoch: string;
  snapshot: Record<string, unknown>;
}

export interface TopicError {
  code: string;
  message: string;
}

export interface TopicListener {
  /** The server confirmed the subscription (after every (re)connect). */
  onSubscribed?(): void;
  onEvent?(event: BusEvent): void;
  onReset?(reset: ResetMessage): void;
  onError?(error: TopicError): void;
}

export type ConnectionStatus = "idle" | "connecting" | "open" | "reconnecting" | "stopped";

export interface Position {
  epoch: string | null;
  seq: number;
}

interface SocketLike {
  readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason?: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface RealtimeOptions {
  /** ws(s)://host/ws/v1/events */
  url: () => string;
  /** A fresh ticket from POST /api/v1/realtime/tickets. */
  ticket: () => Promise<string>;
  createSocket?: (url: string) => SocketLike;
  onStatus?: (status: ConnectionStatus) => void;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Reconnect when nothing (not even the server's ping) arrived for this long. */
  silenceMs?: number;
  random?: () => number;
}

interface Topic {
  listeners: Set<TopicListener>;
  /** Position of the last event processed; null until the first `subscribed`. */
  position: Position | null;
  /** Where the first subscription asked to start (null: now; 0: the whole log). */
  since: number | null;
  subscribed: boolean;
  retry: ReturnType<typeof setTimeout> | null;
}

const OPEN = 1;

export class RealtimeClient {
  private readonly options: Required<Omit<RealtimeOptions, "onStatus" | "createSocket">> &
    Pick<RealtimeOptions, "onStatus" | "createSocket">;
  private readonly topics = new Map<string, Topic>();
  private socket: SocketLike | null = null;
  private status: ConnectionStatus = "idle";
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private silenceTimer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private connecting = false;

  constructor(options: RealtimeOptions) {
    this.options = {
      initialBackoffMs: 500,
      maxBackoffMs: 15_000,
      silenceMs: 60_000,
      random: Math.random,
      ...options,
    };
  }

  get connectionStatus(): ConnectionStatus {
    return this.status;
  }

  position(topic: string): Position | null {
    return this.topics.get(topic)?.position ?? null;
  }

  /** Listens to `topic` until the returned function is called. `since` applies to the first listener. */
  subscribe(topic: string, listener: TopicListener, { since = null }: { since?: number | null } = {}): () => void {
    let entry = this.topics.get(topic);
    if (!entry) {
      entry = { listeners: new Set(), position: null, since, subscribed: false, retry: null };
      this.topics.set(topic, entry);
      if (this.socket?.readyState === OPEN) this.sendSubscribe(topic, entry);
      else this.ensureConnected();
    }
    entry.listeners.add(listener);
    return () => this.unsubscribe(topic, listener);
  }

  /** Closes the socket for good (sign-out). */
  stop(): void {
    this.stopped = true;
    this.clearTimers();
    for (const entry of this.topics.values()) if (entry.retry) clearTimeout(entry.retry);
    this.topics.clear();
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, "signed out");
    this.setStatus("stopped");
  }

  private unsubscribe(topic: string, listener: TopicListener): void {
    const entry = this.topics.get(topic);
    if (!entry) return;
    entry.listeners.delete(listener);
    if (entry.listeners.size > 0) return;
    if (entry.retry) clearTimeout(entry.retry);
    this.topics.delete(topic);
    if (entry.subscribed && this.socket?.readyState === OPEN) this.send({ op: "unsubscribe", topic });
    if (this.topics.size === 0) this.disconnectIdle();
  }

  private disconnectIdle(): void {
    this.clearTimers();
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, "no topics");
    this.setStatus("idle");
  }

  private setStatus(status: ConnectionStatus): void {
    if (status === this.status) return;
    this.status = status;
    this.options.onStatus?.(status);
  }

  private clearTimers(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.silenceTimer) clearTimeout(this.silenceTimer);
    this.reconnectTimer = null;
    this.silenceTimer = null;
  }

  private ensureConnected(): void {
    if (this.stopped || this.socket || this.connecting || this.reconnectTimer) return;
    void this.connect();
  }

  private async connect(): Promise<void> {
    if (this.stopped || this.topics.size === 0) return;
    this.connecting = true;
    this.setStatus(this.attempt === 0 ? "connecting" : "reconnecting");
    let ticket: string;
    try {
      ticket = await this.options.ticket();
    } catch {
      this.connecting = false;
      this.scheduleReconnect();
      return;
    }
    this.connecting = false;
    if (this.stopped || this.topics.size === 0) return;
    const url = `${this.options.url()}?ticket=${encodeURIComponent(ticket)}`;
    const socket = this.options.createSocket ? this.options.createSocket(url) : (new WebSocket(url) as unknown as SocketLike);
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket !== socket) return;
      this.setStatus("open");
      this.armSilence();
      for (const [topic, entry] of this.topics) this.sendSubscribe(topic, entry);
    };
    socket.onmessage = (event) => {
      if (this.socket !== socket) return;
      this.armSilence();
      this.attempt = 0;
      this.onMessage(event.data);
    };
    socket.onerror = () => {
      // A close event follows; it decides what to do.
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.silenceTimer) clearTimeout(this.silenceTimer);
      for (const entry of this.topics.values()) entry.subscribed = false;
      if (this.stopped) return;
      if (event.code === 4404) {
        this.setStatus("stopped");
        return;
      }
      if (event.code === 4401 || event.code === 4008) {
        // Credential expired, or we fell behind: a new ticket and resume at once (no backoff).
        this.setStatus("reconnecting");
        void this.connect();
        return;
      }
      this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.topics.size === 0 || this.reconnectTimer) return;
    this.setStatus("reconnecting");
    const { initialBackoffMs, maxBackoffMs, random } = this.options;
    const base = Math.min(maxBackoffMs, initialBackoffMs * 2 ** this.attempt);
    this.attempt += 1;
    const delay = base / 2 + (base / 2) * random();
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.connect();
    }, delay);
  }

  private armSilence(): void {
    if (this.silenceTimer) clearTimeout(this.silenceTimer);
    const socket = this.socket;
    this.silenceTimer = setTimeout(() => {
      // A half-open connection (a network drop nobody told us about): close it and resume.
      if (socket && this.socket === socket) {
        socket.onclose?.({ code: 4000, reason: "silent" });
        socket.close(4000, "silent");
      }
    }, this.options.silenceMs);
  }

  private send(message: Record<string, unknown>): void {
    this.socket?.send(JSON.stringify(message));
  }

  private sendSubscribe(topic: string, entry: Topic): void {
    const message: Record<string, unknown> = { op: "subscribe", topic, since: entry.position?.seq ?? entry.since };
    if (entry.position?.epoch) message.epoch = entry.position.epoch;
    this.send(message);
  }

  private onMessage(raw: unknown): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(String(raw)) as Record<string, unknown>;
    } catch {
      return;
    }
    const topic = typeof message.topic === "string" ? message.topic : null;
    const entry = topic ? this.topics.get(topic) : undefined;
    if (typeof message.seq === "number") {
      if (entry) this.onEvent(entry, message as unknown as BusEvent);
      return;
    }
    switch (message.type) {
      case "subscribed":
        if (entry) {
          entry.subscribed = true;
          const epoch = (message.epoch as string | null) ?? null;
          if (!entry.position) {
            // From now (since null): the log's end; else replay from `since` follows.
            entry.position = { epoch, seq: entry.since ?? (message.last_seq as number) };
          } else if (!entry.position.epoch) {
            entry.position = { epoch, seq: entry.position.seq };
          }
          for (const listener of [...entry.listeners]) listener.onSubscribed?.();
        }
        break;
      case "reset":
        if (entry) {
          const reset = message as unknown as ResetMessage;
          entry.position = { epoch: reset.epoch, seq: reset.last_seq };
          for (const listener of [...entry.listeners]) listener.onReset?.(reset);
        }
        break;
      case "error":
        if (entry && topic) this.onTopicError(topic, entry, message);
        break;
      default:
        // ping, pong, unsubscribed
        break;
    }
  }

  private onEvent(entry: Topic, event: BusEvent): void {
    const position = entry.position;
    if (position && position.epoch === event.epoch && event.seq <= position.seq) return;
    entry.position = { epoch: event.epoch, seq: event.seq };
    for (const listener of [...entry.listeners]) listener.onEvent?.(event);
  }

  private onTopicError(topic: string, entry: Topic, message: Record<string, unknown>): void {
    const error = { code: String(message.code ?? "error"), message: String(message.message ?? "") };
    if (error.code === "unavailable") {
      // Redis or the snapshot failed: subscribe again shortly.
      entry.subscribed = false;
      if (entry.retry) clearTimeout(entry.retry);
      entry.retry = setTimeout(() => {
        entry.retry = null;
        if (this.topics.get(topic) === entry && this.socket?.readyState === OPEN) this.sendSubscribe(topic, entry);
      }, 2000);
      return;
    }
    if (error.code === "already_subscribed") return;
    for (const listener of [...entry.listeners]) listener.onError?.(error);
  }
}
