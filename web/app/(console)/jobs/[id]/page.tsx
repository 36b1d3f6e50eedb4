import type { Metadata } from "next";
import Link from "next/link";

import { LiveJob } from "@/components/jobs/live-job";
import { ErrorState } from "@/components/ui/states";
import { Time } from "@/components/ui/time";
import type { Job } from "@/lib/api/types";
import type { JobMetrics } from "@/lib/jobs";
import { apiGet, enc } from "@/lib/server/api";

export async function generateMetadata({ params }: { params: Promise<{ id: string }> }): Promise<Metadata> {
  return { title: `Job ${(await params).id}` };
}

export default async function JobPage({ params }: { params: Promise<{ id: string }> }) {
  const { id } = await params;
  const [job, metrics] = await Promise.all([apiGet<Job>(`/api/v1/jobs/${enc(id)}`), apiGet<JobMetrics>(`/api/v1/jobs/${enc(id)}/metrics`)]);
  if (!job.ok) return <ErrorState error={job.error} title={`Job ${id} could not be loaded`} />;
  const params_ = job.data.params as Record<string, unknown>;
  return (
    <div className="grid grid-cols-1 gap-6">
      <div>
        <p className="text-sm text-muted-foreground">
          <Link href="/jobs" className="underline-offset-4 hover:underline">Jobs</Link> / {job.data.id}
        </p>
        <h1 className="text-2xl font-semibold tracking-tight">
          {job.data.kind === "train" ? "Training" : "Batch prediction"} {job.data.model ? `of ${job.data.model}` : ""}
        </h1>
        <p className="text-sm text-muted-foreground">
          {typeof params_.target === "string" ? `target ${params_.target} · ${String(params_.task ?? "")} · ` : ""}
          dataset {job.data.dataset_id ?? "–"} · created <Time iso={job.data.created_at} />
        </p>
      </div>
      {metrics.ok ? null : <ErrorState error={metrics.error} title="The recorded curves could not be loaded; live epochs still appear" />}
      <LiveJob initial={job.data} metrics={metrics.ok ? metrics.data.epochs : []} />
    </div>
  );
}
