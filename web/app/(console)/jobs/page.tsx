import type { Metadata } from "next";
import Link from "next/link";

import { JobList } from "@/components/jobs/job-list";
import { Button } from "@/components/ui/button";
import { ErrorState } from "@/components/ui/states";
import type { Job } from "@/lib/api/types";
import { cn } from "@/lib/utils";
import { apiGet, requireSession } from "@/lib/server/api";

export const metadata: Metadata = { title: "Jobs" };

const STATES = ["queued", "running", "succeeded", "failed", "cancelled"];

export default async function JobsPage({ searchParams }: { searchParams: Promise<{ state?: string }> }) {
  const session = await requireSession();
  const wanted = (await searchParams).state;
  const state = wanted && STATES.includes(wanted) ? wanted : null;
  const jobs = await apiGet<Job[]>(`/api/v1/jobs?limit=200${state ? `&state=${state}` : ""}`);
  return (
    <div className="grid grid-cols-1 gap-6">
      <div className="flex flex-wrap items-end gap-3">
        <div>
          <h1 className="text-2xl font-semibold tracking-tight">Jobs</h1>
          <p className="text-sm text-muted-foreground">Training and batch prediction, newest first; state and progress update live.</p>
        </div>
        <Button asChild className="ml-auto"><Link href="/train">Train a model</Link></Button>
      </div>
      <nav aria-label="Filter by state" className="flex flex-wrap gap-1">
        {[null, ...STATES].map((s) => (
          <Link
            key={s ?? "all"}
            href={s ? `/jobs?state=${s}` : "/jobs"}
            aria-current={s === state ? "page" : undefined}
            className={cn("rounded-md px-2.5 py-1 text-sm text-muted-foreground hover:bg-accent hover:text-foreground", s === state && "bg-accent text-foreground")}
          >
            {s ?? "all"}
          </Link>
        ))}
      </nav>
      {jobs.ok ? <JobList key={state ?? "all"} username={session.user.username} initial={jobs.data} state={state} /> : <ErrorState error={jobs.error} title="Jobs could not be loaded" />}
    </div>
  );
}
