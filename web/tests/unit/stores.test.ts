import { beforeEach, describe, expect, it } from "vitest";

import type { Job, StageChange } from "@/lib/api/types";
import { hasRole, canManageModel, useSession } from "@/lib/auth/store";
import type { BusEvent } from "@/lib/realtime/client";
import { rollbackTarget } from "@/lib/registry/rollback";
import { MAX_ALERTS, useAlerts } from "@/lib/stores/alerts";
import { MAX_RECENT_JOBS, useJobs } from "@/lib/stores/jobs";
import { applyModelEvent, EMPTY_LIVE, useModelLive } from "@/lib/stores/model-live";

function ev(type: string, data: Record<string, unknown>, seq = 1): BusEvent {
  return { type, topic: "user:ada", seq, epoch: "e", ts: 1_700_000_000, data };
}

function job(id: number, state = "queued"): Job {
  return { id, kind: "train", state, params: {}, progress: null, result: null, error: null, model: "m", dataset_id: 1, created_at: null, started_at: null, finished_at: null };
}

describe("jobs store", () => {
  beforeEach(() => useJobs.setState({ jobs: [] }));

  it("updates a known job's state and progress from its events", () => {
    useJobs.getState().setJobs([job(2), job(1)]);
    useJobs.getState().apply(ev("started", { job_id: 1, state: "running" }));
    useJobs.getState().apply(ev("epoch", { job_id: 1, state: "running", epoch: 3, epochs: 10, loss: 0.5 }, 2));
    const updated = useJobs.getState().jobs.find((j) => j.id === 1)!;
    expect(updated.state).toBe("running");
    expect(updated.progress).toMatchObject({ epoch: 3, epochs: 10, loss: 0.5 });
  });

  it("puts a new job first and keeps the list short", () => {
    useJobs.getState().setJobs(Array.from({ length: MAX_RECENT_JOBS }, (_, i) => job(i + 1)));
    useJobs.getState().apply(ev("queued", { job_id: 99, state: "queued", kind: "train", model: "churn" }));
    const jobs = useJobs.getState().jobs;
    expect(jobs[0]).toMatchObject({ id: 99, model: "churn", state: "queued" });
    expect(jobs).toHaveLength(MAX_RECENT_JOBS);
  });

  it("keeps the same list object for events about no job (selectors stay stable)", () => {
    useJobs.getState().setJobs([job(1)]);
    const before = useJobs.getState().jobs;
    useJobs.getState().apply(ev("drift", { report_id: 5, model: "m" }));
    expect(useJobs.getState().jobs).toBe(before);
  });
});

describe("alerts store", () => {
  beforeEach(() => useAlerts.setState({ alerts: [], fresh: [] }));

  it("adds drift events once, newest first, marked new", () => {
    const drift = ev("drift", { report_id: 7, model: "iris", version: 2, features: { x1: 0.9 }, threshold: 0.2, sample_count: 500 });
    useAlerts.getState().apply(drift);
    useAlerts.getState().apply(drift);
    useAlerts.getState().apply(ev("succeeded", { job_id: 1 }));
    expect(useAlerts.getState().alerts).toEqual([
      { id: 7, model: "iris", version: 2, created_at: new Date(1_700_000_000_000).toISOString(), drifted_features: ["x1"], threshold: 0.2, sample_count: 500 },
    ]);
    expect(useAlerts.getState().fresh).toEqual([7]);
  });

  it("keeps at most MAX_ALERTS", () => {
    for (let i = 0; i < MAX_ALERTS + 5; i += 1) useAlerts.getState().apply(ev("drift", { report_id: i, model: "m", features: {} }, i + 1));
    expect(useAlerts.getState().alerts).toHaveLength(MAX_ALERTS);
    expect(useAlerts.getState().alerts[0]!.id).toBe(MAX_ALERTS + 4);
  });
});

describe("model live store", () => {
  it("tracks each serving process's hot swap", () => {
    let live = applyModelEvent(EMPTY_LIVE, ev("serving.swap_started", { process: "h:1", version: 3, from_version: "2" }));
    expect(live.swaps["h:1"]).toMatchObject({ state: "swapping", version: 3, fromVersion: "2" });
    live = applyModelEvent(live, ev("serving.swap_done", { process: "h:1", version: 3, from_version: "2", seconds: 0.41 }, 2));
    live = applyModelEvent(live, ev("serving.swap_failed", { process: "h:2", version: 3, error: "no memory" }, 3));
    expect(live.swaps["h:1"]).toMatchObject({ state: "done", seconds: 0.41 });
    expect(live.swaps["h:2"]).toMatchObject({ state: "failed", error: "no memory" });
    expect(live.log.map((e) => e.text)).toEqual([
      "a serving process could not load version 3: no memory",
      "a serving process now serves version 3",
      "a serving process is loading version 3",
    ]);
  });

  it("describes promotions and rollbacks, per model", () => {
    useModelLive.setState({ models: {} });
    useModelLive.getState().apply("iris", ev("rolled_back", { version: 1, from_version: 2, actor: "ada" }));
    useModelLive.getState().apply("churn", ev("promoted", { version: 4, stage: "production", actor: "bo" }));
    expect(useModelLive.getState().models.iris!.log[0]!.text).toBe("rolled back to version 1 from version 2 by ada");
    expect(useModelLive.getState().models.churn!.log[0]!.text).toBe("version 4 moved to production by bo");
  });
});

describe("session store", () => {
  it("orders roles and hides management from non-owners", () => {
    const member = { username: "m", role: "member" };
    const owner = { username: "o", role: "maintainer" };
    const admin = { username: "a", role: "admin" };
    expect(hasRole(member, "member") && !hasRole(member, "maintainer")).toBe(true);
    expect(canManageModel(owner, "o")).toBe(true);
    expect(canManageModel(owner, "someone")).toBe(false);
    expect(canManageModel(member, "m")).toBe(false);
    expect(canManageModel(admin, "someone")).toBe(true);
    expect(canManageModel(null, "o")).toBe(false);
  });

  it("does not replace an unchanged user (no re-render)", () => {
    useSession.setState({ user: { username: "a", role: "admin" }, status: "active" });
    const before = useSession.getState().user;
    useSession.getState().setUser({ username: "a", role: "admin" });
    expect(useSession.getState().user).toBe(before);
  });
});

function change(id: number, version: number, to_stage: string, action = "promote"): StageChange {
  return { id, version, from_stage: "none", to_stage, action, actor: "a", reason: "", at: "2026-01-01T00:00:00Z" };
}

describe("rollbackTarget (the server's rule)", () => {
  it("walks back through the production lineage", () => {
    const history = [change(1, 1, "production"), change(2, 2, "production"), change(3, 3, "production")];
    expect(rollbackTarget(history, 3)).toBe(2);
    const after = [...history, change(4, 3, "archived", "rollback"), change(5, 2, "production", "rollback")];
    expect(rollbackTarget(after, 2)).toBe(1);
    const again = [...after, change(6, 2, "archived", "rollback"), change(7, 1, "production", "rollback")];
    expect(rollbackTarget(again, 1)).toBeNull();
  });

  it("restores the last production version when none is in production; nothing without history", () => {
    expect(rollbackTarget([change(1, 1, "production"), change(2, 1, "archived")], null)).toBe(1);
    expect(rollbackTarget([], null)).toBeNull();
    // Newest first, as the API lists it, gives the same answer.
    expect(rollbackTarget([change(2, 2, "production"), change(1, 1, "production")], 2)).toBe(1);
  });
});
