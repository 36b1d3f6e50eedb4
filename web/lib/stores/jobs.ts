// The overview's recent jobs: the list the server rendered, kept current by the events on user:<name>.
import { create } from "zustand";

import type { Job } from "@/lib/api/types";
import type { BusEvent } from "@/lib/realtime/client";

export const MAX_RECENT_JOBS = 8;

/** A job event applied to the list: state and progress of a known job change; an unknown one is added. */
export function applyJobEvent(jobs: Job[], event: BusEvent, limit: number = MAX_RECENT_JOBS): Job[] {
  const data = event.data;
  const id = typeof data.job_id === "number" ? data.job_id : null;
  if (id === null) return jobs;
  const index = jobs.findIndex((job) => job.id === id);
  const state = typeof data.state === "string" ? data.state : undefined;
  const progress = pickProgress(data);
  if (index === -1) {
    const added: Job = {
      id,
      kind: typeof data.kind === "string" ? data.kind : "job",
      state: state ?? event.type,
      params: {},
      progress: progress ?? null,
      result: null,
      error: typeof data.error === "string" ? data.error : null,
      model: typeof data.model === "string" ? data.model : null,
      dataset_id: null,
      created_at: new Date(event.ts * 1000).toISOString(),
      started_at: null,
      finished_at: null,
    };
    return [added, ...jobs].slice(0, limit);
  }
  const job = jobs[index]!;
  const updated: Job = {
    ...job,
    state: state ?? job.state,
    progress: progress ? { ...job.progress, ...progress } : job.progress,
    error: typeof data.error === "string" ? data.error : job.error,
  };
  const out = jobs.slice();
  out[index] = updated;
  return out;
}

function pickProgress(data: Record<string, unknown>): Record<string, unknown> | null {
  const keys = ["epoch", "epochs", "step", "loss", "val_loss", "metric"];
  const found = Object.fromEntries(keys.filter((k) => k in data).map((k) => [k, data[k]]));
  if (data.progress && typeof data.progress === "object") Object.assign(found, data.progress);
  return Object.keys(found).length ? found : null;
}

interface JobsState {
  jobs: Job[];
  setJobs: (jobs: Job[]) => void;
  apply: (event: BusEvent) => void;
}

export const useJobs = create<JobsState>()((set) => ({
  jobs: [],
  setJobs: (jobs) => set({ jobs: jobs.slice(0, MAX_RECENT_JOBS) }),
  apply: (event) => set((state) => {
    const jobs = applyJobEvent(state.jobs, event);
    return jobs === state.jobs ? state : { jobs };
  }),
}));
