"use client";

import Link from "next/link";
import { useState } from "react";

import { DownloadOutput } from "@/components/jobs/download-output";
import { useTopic } from "@/components/realtime/use-topic";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { EmptyState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { Time } from "@/components/ui/time";
import { api } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import type { Job } from "@/lib/api/types";
import { stateVariant, TERMINAL } from "@/lib/jobs";
import { applyJobEvent } from "@/lib/stores/jobs";
import { toast } from "@/lib/stores/toast";

function progressText(job: Job): string {
  const p = job.progress as { epoch?: number; epochs?: number; rows?: number } | null;
  if (p && typeof p.epoch === "number") return typeof p.epochs === "number" ? `${p.epoch} / ${p.epochs}` : `${p.epoch}`;
  if (p && typeof p.rows === "number") return `${p.rows} rows`;
  return "–";
}

/** Every job of the caller (admins: everyone's), state and progress live from user:<name>. */
export function JobList({ username, initial, state }: { username: string; initial: Job[]; state: string | null }) {
  const [jobs, setJobs] = useState(initial);
  const [busy, setBusy] = useState<number | null>(null);
  useTopic(`user:${username}`, {
    onEvent: (event) => setJobs((current) => {
      const next = applyJobEvent(current, event, Number.MAX_SAFE_INTEGER);
      return state ? next.filter((job) => job.state === state || job.id === event.data.job_id) : next;
    }),
    onReset: () => {
      api<Job[]>(`/api/v1/jobs?limit=200${state ? `&state=${state}` : ""}`).then(setJobs).catch(() => undefined);
    },
  });
  const cancel = async (job: Job) => {
    setBusy(job.id);
    try {
      const updated = await api<Job>(`/api/v1/jobs/${job.id}/cancel`, { method: "POST" });
      setJobs((current) => current.map((j) => (j.id === job.id ? { ...j, ...updated } : j)));
    } catch (error) {
      toast("Could not cancel", { description: error instanceof ApiError ? error.message : String(error), variant: "error" });
    } finally {
      setBusy(null);
    }
  };
  if (!jobs.length) return <EmptyState title={state ? `No ${state} jobs` : "No jobs yet"}>Train a model from a dataset, or run a batch prediction: the jobs appear here, live.</EmptyState>;
  return (
    <Table label="Jobs" aria-live="polite">
      <TableHeader>
        <TableRow>
          <TableHead>Job</TableHead>
          <TableHead>Kind</TableHead>
          <TableHead>Model</TableHead>
          <TableHead>State</TableHead>
          <TableHead>Progress</TableHead>
          <TableHead>Created</TableHead>
          <TableHead><span className="sr-only">Actions</span></TableHead>
        </TableRow>
      </TableHeader>
      <TableBody>
        {jobs.map((job) => (
          <TableRow key={job.id} data-testid={`job-row-${job.id}`}>
            <TableCell><Link href={`/jobs/${job.id}`} className="font-mono underline-offset-4 hover:underline">#{job.id}</Link></TableCell>
            <TableCell>{job.kind === "train" ? "Training" : job.kind === "batch_predict" ? "Batch prediction" : job.kind}</TableCell>
            <TableCell>{job.model ?? "–"}</TableCell>
            <TableCell><Badge variant={stateVariant(job.state)}>{job.state}</Badge></TableCell>
            <TableCell className="tabular-nums">{progressText(job)}</TableCell>
            <TableCell className="text-muted-foreground"><Time iso={job.created_at} /></TableCell>
            <TableCell className="text-right">
              {job.kind === "batch_predict" && job.state === "succeeded" ? (
                <DownloadOutput jobId={job.id} label="CSV" />
              ) : null}
              {!TERMINAL.has(job.state) && !job.cancel_requested ? (
                <Button variant="ghost" size="sm" onClick={() => cancel(job)} disabled={busy === job.id} aria-label={`Cancel job ${job.id}`}>Cancel</Button>
              ) : null}
            </TableCell>
          </TableRow>
        ))}
      </TableBody>
    </Table>
  );
}
