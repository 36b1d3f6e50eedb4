import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { RealtimeClient, type BusEvent, type ConnectionStatus, type ResetMessage } from "@/lib/realtime/client";

class FakeSocket {
  static all: FakeSocket[] = [];
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: ((e: unknown) => void) | null = null;
  onmessage: ((e: { data: unknown }) => void) | null = null;
  onclose: ((e: { code: number }) => void) | null = null;
  onerror: ((e: unknown) => void) | null = null;
  closed: number | null = null;

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
  }

  send(data: string) {
    this.sent.push(JSON.parse(data));
  }

  close(code = 1000) {
    this.closed = code;
    this.readyState = 3;
  }

  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(message: object) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  drop(code: number) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
}

const last = () => FakeSocket.all[FakeSocket.all.length - 1]!;

function event(seq: number, epoch = "e1", topic = "job:1"): BusEvent {
  return { type: "job.progress", topic, seq, epoch, ts: 1, data: { step: seq } };
}

let tickets: number;
let statuses: ConnectionStatus[];

function client() {
  return new RealtimeClient({
    url: () => "ws://test/ws/v1/events",
    ticket: async () => `t${++tickets}`,
    createSocket: (url) => new FakeSocket(url),
    onStatus: (s) => statuses.push(s),
    random: () => 1,
    initialBackoffMs: 100,
    maxBackoffMs: 1000,
  });
}

async function connected(c: RealtimeClient, topic = "job:1", listener = {}) {
  const stop = c.subscribe(topic, listener);
  await vi.waitFor(() => expect(FakeSocket.all.length).toBeGreaterThan(0));
  last().open();
  return stop;
}

beforeEach(() => {
  FakeSocket.all = [];
  tickets = 0;
  statuses = [];
});

afterEach(() => {
  vi.useRealTimers();
});

describe("RealtimeClient", () => {
  it("connects with a fresh ticket and subscribes from now", async () => {
    const c = client();
    await connected(c);
    expect(last().url).toBe("ws://test/ws/v1/events?ticket=t1");
    expect(last().sent).toEqual([{ op: "subscribe", topic: "job:1", since: null }]);
    expect(statuses).toEqual(["connecting", "open"]);
  });

  it("delivers each seq once, in order, and drops replayed duplicates", async () => {
    const c = client();
    const seen: number[] = [];
    await connected(c, "job:1", { onEvent: (e: BusEvent) => seen.push(e.seq) });
    last().receive({ type: "subscribed", topic: "job:1", last_seq: 4, epoch: "e1" });
    for (const seq of [5, 6, 6, 5, 7]) last().receive(event(seq));
    expect(seen).toEqual([5, 6, 7]);
    expect(c.position("job:1")).toEqual({ epoch: "e1", seq: 7 });
  });

  it("resumes after a drop with since and epoch, on a new ticket, after a backoff", async () => {
    vi.useFakeTimers();
    const c = client();
    const seen: number[] = [];
    c.subscribe("job:1", { onEvent: (e) => seen.push(e.seq) });
    await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(1));
    last().open();
    last().receive({ type: "subscribed", topic: "job:1", last_seq: 0, epoch: null });
    last().receive(event(1));
    last().receive(event(2));
    last().drop(1006);
    expect(statuses.at(-1)).toBe("reconnecting");
    expect(FakeSocket.all).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(FakeSocket.all).toHaveLength(2);
    expect(last().url).toContain("ticket=t2");
    last().open();
    expect(last().sent).toEqual([{ op: "subscribe", topic: "job:1", since: 2, epoch: "e1" }]);
    // The server replays what was missed; an overlap is dropped.
    last().receive({ type: "subscribed", topic: "job:1", last_seq: 4, epoch: "e1" });
    for (const seq of [2, 3, 4]) last().receive(event(seq));
    expect(seen).toEqual([1, 2, 3, 4]);
  });

  it("backs off exponentially while the server stays away", async () => {
    vi.useFakeTimers();
    const c = client();
    c.subscribe("job:1", {});
    await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(1));
    for (const delay of [100, 200, 400, 800, 1000, 1000]) {
      last().drop(1006);
      await vi.advanceTimersByTimeAsync(delay - 1);
      const before = FakeSocket.all.length;
      await vi.advanceTimersByTimeAsync(1);
      expect(FakeSocket.all.length).toBe(before + 1);
    }
  });

  it("reconnects at once with a new ticket on 4401 (the credential expired)", async () => {
    const c = client();
    await connected(c);
    last().receive({ type: "subscribed", topic: "job:1", last_seq: 9, epoch: "e1" });
    last().receive({ type: "error", code: "token_expired", message: "expired" });
    last().drop(4401);
    await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(2));
    expect(last().url).toContain("ticket=t2");
    last().open();
    expect(last().sent[0]).toEqual({ op: "subscribe", topic: "job:1", since: 9, epoch: "e1" });
  });

  it("replaces state from a reset's snapshot and goes on from its last_seq", async () => {
    const c = client();
    const resets: ResetMessage[] = [];
    const seen: number[] = [];
    await connected(c, "job:1", { onReset: (r: ResetMessage) => resets.push(r), onEvent: (e: BusEvent) => seen.push(e.seq) });
    last().receive({ type: "subscribed", topic: "job:1", last_seq: 3, epoch: "e1" });
    last().receive({ type: "reset", topic: "job:1", last_seq: 2, epoch: "e2", snapshot: { job: { state: "running" } } });
    expect(resets).toHaveLength(1);
    expect(resets[0]!.snapshot).toEqual({ job: { state: "running" } });
    last().receive(event(3, "e2"));
    // An event of the new epoch with a seq the old epoch had seen is new, not a duplicate.
    expect(seen).toEqual([3]);
    expect(c.position("job:1")).toEqual({ epoch: "e2", seq: 3 });
  });

  it("asks for the whole log with since 0", async () => {
    const c = client();
    const seen: number[] = [];
    c.subscribe("user:ada", { onEvent: (e) => seen.push(e.seq) }, { since: 0 });
    await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(1));
    last().open();
    expect(last().sent[0]).toEqual({ op: "subscribe", topic: "user:ada", since: 0 });
    last().receive({ type: "subscribed", topic: "user:ada", last_seq: 2, epoch: "e1" });
    last().receive(event(1, "e1", "user:ada"));
    last().receive(event(2, "e1", "user:ada"));
    expect(seen).toEqual([1, 2]);
  });

  it("shares one subscription between listeners and unsubscribes with the last", async () => {
    const c = client();
    const a: number[] = [];
    const b: number[] = [];
    const stopA = await connected(c, "model:iris", { onEvent: (e: BusEvent) => a.push(e.seq) });
    const stopB = c.subscribe("model:iris", { onEvent: (e) => b.push(e.seq) });
    expect(last().sent.filter((m) => m.op === "subscribe")).toHaveLength(1);
    last().receive({ type: "subscribed", topic: "model:iris", last_seq: 0, epoch: null });
    last().receive(event(1, "e1", "model:iris"));
    stopA();
    last().receive(event(2, "e1", "model:iris"));
    expect(a).toEqual([1]);
    expect(b).toEqual([1, 2]);
    stopB();
    expect(last().sent.at(-1)).toEqual({ op: "unsubscribe", topic: "model:iris" });
    expect(last().closed).toBe(1000);
  });

  it("subscribes again after an 'unavailable' error; reports 'forbidden' to the listener", async () => {
    vi.useFakeTimers();
    const c = client();
    const errors: string[] = [];
    c.subscribe("job:1", { onError: (e) => errors.push(e.code) });
    c.subscribe("job:2", { onError: (e) => errors.push(e.code) });
    await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(1));
    last().open();
    last().receive({ type: "error", topic: "job:1", code: "unavailable", message: "redis" });
    last().receive({ type: "error", topic: "job:2", code: "forbidden", message: "no" });
    expect(errors).toEqual(["forbidden"]);
    await vi.advanceTimersByTimeAsync(2000);
    expect(last().sent.filter((m) => m.topic === "job:1" && m.op === "subscribe")).toHaveLength(2);
  });

  it("stops for good on 4404 and on stop()", async () => {
    const c = client();
    await connected(c);
    last().drop(4404);
    expect(statuses.at(-1)).toBe("stopped");
    const d = client();
    await connected(d);
    d.stop();
    expect(last().closed).toBe(1000);
  });

  it("closes and resumes a connection that went silent", async () => {
    vi.useFakeTimers();
    const c = new RealtimeClient({
      url: () => "ws://test/ws/v1/events",
      ticket: async () => `t${++tickets}`,
      createSocket: (url) => new FakeSocket(url),
      silenceMs: 5000,
      initialBackoffMs: 10,
      random: () => 1,
    });
    c.subscribe("job:1", {});
    await vi.waitFor(() => expect(FakeSocket.all).toHaveLength(1));
    last().open();
    await vi.advanceTimersByTimeAsync(5000);
    expect(FakeSocket.all[0]!.closed).toBe(4000);
    await vi.advanceTimersByTimeAsync(20);
    expect(FakeSocket.all).toHaveLength(2);
  });
});
