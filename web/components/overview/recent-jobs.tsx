"use client";

import { useEffect } from "react";

import { useTopic } from "@/components/realtime/use-topic";
import { Badge } from "@/components/ui/badge";
import { EmptyState } from "@/components/ui/states";
import { Time } from "@/components/ui/time";
import { api } from "@/lib/api/client";
import type { Job } from "@/lib/api/types";
import { MAX_RECENT_JOBS, useJobs } from "@/lib/stores/jobs";

const STATE = { succeeded: "success", failed: "destructive", cancelled: "muted", running: "info", queued: "outline" } as const;

function progressText(job: Job): string | null {
  const p = job.progress as { epoch?: number; epochs?: number } | null;
  if (p && typeof p.epoch === "number") return typeof p.epochs === "number" ? `epoch ${p.epoch} of ${p.epochs}` : `epoch ${p.epoch}`;
  return null;
}

export function RecentJobs({ username, initial }: { username: string; initial: Job[] }) {
  const jobs = useJobs((s) => s.jobs);
  useEffect(() => {
    useJobs.getState().setJobs(initial);
  }, [initial]);
  useTopic(`user:${username}`, {
    onEvent: (event) => useJobs.getState().apply(event),
    // The user topic's snapshot holds no jobs: read them again.
    onReset: () => {
      api<Job[]>(`/api/v1/jobs?limit=${MAX_RECENT_JOBS}`).then((list) => useJobs.getState().setJobs(list)).catch(() => undefined);
    },
  });
  if (jobs.length === 0) return <EmptyState title="No jobs yet">Training and batch prediction jobs you start appear here, live.</EmptyState>;
  return (
    <ul className="divide-y" aria-live="polite" aria-label="Recent jobs">
      {jobs.map((job) => (
        <li key={job.id} className="flex flex-wrap items-center gap-x-3 gap-y-1 py-2" data-testid={`job-${job.id}`}>
          <span className="font-mono text-sm">#{job.id}</span>
          <span className="text-sm">{job.kind === "train" ? "Training" : job.kind}</span>
          {job.model ? <span className="truncate text-sm text-muted-foreground">{job.model}</span> : null}
          <Badge variant={STATE[job.state as keyof typeof STATE] ?? "outline"}>{job.state}</Badge>
          {progressText(job) ? <span className="text-xs text-muted-foreground">{progressText(job)}</span> : null}
          <span className="ml-auto text-xs text-muted-foreground">
            <Time iso={job.created_at} />
          </span>
        </li>
      ))}
    </ul>
  );
}
