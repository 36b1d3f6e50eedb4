import type { Metadata } from "next";
import { Suspense } from "react";

import { DriftAlerts } from "@/components/overview/drift-alerts";
import { ModelTraffic } from "@/components/overview/model-traffic";
import { ReadinessCard } from "@/components/overview/readiness";
import { RecentJobs } from "@/components/overview/recent-jobs";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Skeleton } from "@/components/ui/skeleton";
import { ErrorState } from "@/components/ui/states";
import type { DriftAlert, Job, Model, Traffic } from "@/lib/api/types";
import { apiGet, requireSession } from "@/lib/server/api";

export const metadata: Metadata = { title: "Overview" };

function CardSkeleton() {
  return (
    <div className="grid gap-2" role="status" aria-label="Loading">
      <Skeleton className="h-5 w-2/3" />
      <Skeleton className="h-5 w-1/2" />
      <Skeleton className="h-5 w-3/4" />
    </div>
  );
}

async function ModelsSection() {
  const [models, traffic] = await Promise.all([apiGet<Model[]>("/api/v1/models"), apiGet<Traffic[]>("/api/v1/monitoring/traffic")]);
  if (!models.ok) return <ErrorState error={models.error} title="Models could not be loaded" />;
  return <ModelTraffic models={models.data} initial={traffic.ok ? traffic.data : []} />;
}

async function JobsSection({ username }: { username: string }) {
  const jobs = await apiGet<Job[]>("/api/v1/jobs?limit=8");
  if (!jobs.ok) return <ErrorState error={jobs.error} title="Jobs could not be loaded" />;
  return <RecentJobs username={username} initial={jobs.data} />;
}

async function AlertsSection({ username }: { username: string }) {
  const alerts = await apiGet<DriftAlert[]>("/api/v1/monitoring/alerts?limit=10");
  if (!alerts.ok) return <ErrorState error={alerts.error} title="Drift alerts could not be loaded" />;
  return <DriftAlerts username={username} initial={alerts.data} />;
}

export default async function OverviewPage() {
  const session = await requireSession();
  const username = session.user.username;
  return (
    <div className="grid grid-cols-1 gap-6">
      <div>
        <h1 className="text-2xl font-semibold tracking-tight">Overview</h1>
        <p className="text-sm text-muted-foreground">The service, your models and your jobs, live.</p>
      </div>
      {/* Readiness waits up to its checks' timeout when a dependency is down: it streams in on its own. */}
      <Suspense fallback={<Card><CardContent className="pt-4"><CardSkeleton /></CardContent></Card>}>
        <ReadinessCard />
      </Suspense>
      <div className="grid grid-cols-1 gap-6 lg:grid-cols-2">
        <Card aria-labelledby="models-title" className="lg:col-span-2">
          <CardHeader>
            <CardTitle id="models-title">Models</CardTitle>
            <CardDescription>Production version and requests per second over the last minute.</CardDescription>
          </CardHeader>
          <CardContent>
            <ModelsSection />
          </CardContent>
        </Card>
        <Card aria-labelledby="jobs-title">
          <CardHeader>
            <CardTitle id="jobs-title">Your recent jobs</CardTitle>
          </CardHeader>
          <CardContent>
            <JobsSection username={username} />
          </CardContent>
        </Card>
        <Card aria-labelledby="alerts-title">
          <CardHeader>
            <CardTitle id="alerts-title">Drift alerts</CardTitle>
          </CardHeader>
          <CardContent>
            <AlertsSection username={username} />
          </CardContent>
        </Card>
      </div>
    </div>
  );
}
