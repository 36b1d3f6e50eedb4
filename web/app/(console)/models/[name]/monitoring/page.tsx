import type { Metadata } from "next";
import Link from "next/link";

import { LineChart } from "@/components/charts/line-chart";
import { CheckNowButton, LiveDriftAlerts, MonitoringConfigForm } from "@/components/monitoring/monitoring-controls";
import { Badge } from "@/components/ui/badge";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { EmptyState, ErrorState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import type { Model } from "@/lib/api/types";
import { canManageModel } from "@/lib/auth/store";
import { formatNumber } from "@/lib/format";
import { apiGet, enc, requireSession } from "@/lib/server/api";
import { cn } from "@/lib/utils";

export async function generateMetadata({ params }: { params: Promise<{ name: string }> }): Promise<Metadata> {
  return { title: `Monitoring · ${(await params).name}` };
}

interface Feature { feature: string; psi: number; drifted: boolean; kind: string }
interface Predictions {
  task: string | null;
  count: number;
  psi: number | null;
  fractions?: Record<string, number>;
  histogram?: { edges: number[]; counts: number[] };
  mean?: number;
}
interface VersionSummary {
  version: number;
  recorded: number;
  predictions: Predictions;
  accuracy: { metric: string; value: number | null; labeled: number; series: { start: string; labeled: number; value: number | null }[] };
  drift: { status: string; sample_count: number; threshold: number; features: Feature[] } | null;
}
interface Summary {
  config: { sample_rate: number; drift_threshold: number };
  requests: { count: number; rate_per_second: number; errors: number; latency_ms: Record<string, number | null> };
  versions: VersionSummary[];
}
interface Report { id: number; version: number; created_at: string; status: string; psi: Record<string, number> }

const WINDOWS = ["1h", "6h", "24h", "7d"];

function Bars({ label, items }: { label: string; items: [string, number][] }) {
  const max = Math.max(...items.map(([, v]) => v), 1e-9);
  return (
    <ul className="grid gap-1" aria-label={label}>
      {items.map(([name, value]) => (
        <li key={name} className="grid grid-cols-[6rem_1fr_4rem] items-center gap-2 text-sm">
          <span className="truncate font-mono text-xs" title={name}>{name}</span>
          <span className="h-2 rounded bg-muted"><span className="block h-2 rounded bg-primary" style={{ width: `${(value / max) * 100}%` }} /></span>
          <span className="text-right tabular-nums text-xs">{formatNumber(value)}</span>
        </li>
      ))}
    </ul>
  );
}

function psiOverTime(reports: Report[], threshold: number) {
  const peak = new Map<string, number>();
  for (const r of reports) for (const [f, v] of Object.entries(r.psi)) peak.set(f, Math.max(peak.get(f) ?? 0, v));
  const features = [...peak.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([f]) => f);
  const x = reports.map((r) => Math.floor(Date.parse(r.created_at) / 1000));
  const data = [x, ...features.map((f) => reports.map((r) => r.psi[f] ?? null)), reports.map(() => threshold)];
  return { features, data };
}

export default async function MonitoringPage({ params, searchParams }: { params: Promise<{ name: string }>; searchParams: Promise<{ window?: string }> }) {
  const { name } = await params;
  const wanted = (await searchParams).window;
  const window = wanted && WINDOWS.includes(wanted) ? wanted : "1h";
  const session = await requireSession();
  const [model, summary, reports] = await Promise.all([
    apiGet<Model>(`/api/v1/models/${enc(name)}`),
    apiGet<Summary>(`/api/v1/models/${enc(name)}/monitoring?window=${window}`),
    apiGet<Report[]>(`/api/v1/models/${enc(name)}/monitoring/reports?limit=200`),
  ]);
  if (!model.ok) return <ErrorState error={model.error} title={`Model ${name} could not be loaded`} />;
  const canManage = canManageModel(session.user, model.data.owner);
  const threshold = summary.ok ? summary.data.config.drift_threshold : 0.2;
  const overTime = reports.ok ? psiOverTime(reports.data, threshold) : null;
  return (
    <div className="grid grid-cols-1 gap-6">
      <div className="flex flex-wrap items-end gap-3">
        <div>
          <p className="text-sm text-muted-foreground">
            <Link href="/models" className="underline-offset-4 hover:underline">Models</Link> /{" "}
            <Link href={`/models/${enc(name)}`} className="underline-offset-4 hover:underline">{name}</Link> / monitoring
          </p>
          <h1 className="text-2xl font-semibold tracking-tight">Monitoring</h1>
        </div>
        <nav aria-label="Window" className="ml-auto flex gap-1">
          {WINDOWS.map((w) => (
            <Link key={w} href={`/models/${enc(name)}/monitoring?window=${w}`} aria-current={w === window ? "page" : undefined}
              className={cn("rounded-md px-2.5 py-1 text-sm text-muted-foreground hover:bg-accent hover:text-foreground", w === window && "bg-accent text-foreground")}>
              {w}
            </Link>
          ))}
        </nav>
        {canManage ? <CheckNowButton model={model.data.name} /> : null}
      </div>

      <LiveDriftAlerts model={model.data.name} />

      <Card aria-labelledby="psi-title">
        <CardHeader>
          <div>
            <CardTitle id="psi-title">Drift over time</CardTitle>
            <CardDescription>PSI per feature at every stored check (the five that moved most); dashed: the threshold.</CardDescription>
          </div>
        </CardHeader>
        <CardContent>
          {!reports.ok ? <ErrorState error={reports.error} title="Drift checks could not be loaded" /> : overTime && reports.data.length ? (
            <LineChart label="PSI per feature" data={overTime.data} version={reports.data.length} time points
              series={[...overTime.features.map((f) => ({ label: f })), { label: "threshold", color: "#dc2626", dash: [6, 4] }]} />
          ) : (
            <EmptyState title="No drift checks yet">Run &ldquo;Check drift now&rdquo;, or wait for the hourly check.</EmptyState>
          )}
        </CardContent>
      </Card>

      {!summary.ok ? <ErrorState error={summary.error} title="Monitoring figures could not be loaded" /> : summary.data.versions.length === 0 ? (
        <EmptyState title={`No traffic in the last ${window}`}>Predictions recorded from this model&apos;s traffic appear here.</EmptyState>
      ) : summary.data.versions.map((v) => (
        <Card key={v.version} aria-labelledby={`v${v.version}-title`}>
          <CardHeader>
            <div>
              <CardTitle id={`v${v.version}-title`}>Version {v.version}</CardTitle>
              <CardDescription>{formatNumber(v.recorded)} predictions recorded in the last {window}</CardDescription>
            </div>
            {v.drift ? <Badge variant={v.drift.status === "drift" ? "destructive" : v.drift.status === "ok" ? "success" : "muted"} data-testid={`drift-status-${v.version}`}>{v.drift.status.replace("_", " ")}</Badge> : <Badge variant="muted">no training reference</Badge>}
          </CardHeader>
          <CardContent className="grid gap-6 lg:grid-cols-2">
            <section aria-labelledby={`v${v.version}-drift`} className="min-w-0">
              <h3 id={`v${v.version}-drift`} className="mb-2 text-sm font-medium">Drift per feature (PSI, threshold {v.drift?.threshold ?? threshold})</h3>
              {v.drift?.features.length ? (
                <Table label={`Drift of version ${v.version}`}>
                  <TableHeader><TableRow><TableHead>Feature</TableHead><TableHead>PSI</TableHead><TableHead>State</TableHead></TableRow></TableHeader>
                  <TableBody>
                    {v.drift.features.map((f) => (
                      <TableRow key={f.feature}>
                        <TableCell className="font-mono text-xs">{f.feature}</TableCell>
                        <TableCell className="tabular-nums">{f.psi.toFixed(4)}</TableCell>
                        <TableCell>{f.drifted ? <Badge variant="destructive">drifted</Badge> : <Badge variant="success">ok</Badge>}</TableCell>
                      </TableRow>
                    ))}
                  </TableBody>
                </Table>
              ) : <p className="text-sm text-muted-foreground">No raw records recorded to compare.</p>}
            </section>
            <section aria-labelledby={`v${v.version}-pred`} className="grid min-w-0 content-start gap-3">
              <h3 id={`v${v.version}-pred`} className="text-sm font-medium">
                Predictions{v.predictions.psi !== null ? ` (PSI against training ${v.predictions.psi.toFixed(3)})` : ""}
              </h3>
              {v.predictions.fractions ? (
                <Bars label="Share of each predicted class" items={Object.entries(v.predictions.fractions)} />
              ) : v.predictions.histogram ? (
                <Bars label="Predicted values" items={v.predictions.histogram.counts.map((c, i) => [`${formatNumber(v.predictions.histogram!.edges[i]!)}…`, c] as [string, number])} />
              ) : <p className="text-sm text-muted-foreground">No predictions recorded.</p>}
              <h3 className="text-sm font-medium">Live {v.accuracy.metric}</h3>
              <p className="text-sm" data-testid={`accuracy-${v.version}`}>
                {v.accuracy.value !== null ? <span className="text-xl font-semibold tabular-nums">{formatNumber(v.accuracy.value)}</span> : "–"}{" "}
                <span className="text-muted-foreground">from {formatNumber(v.accuracy.labeled)} predictions with feedback</span>
              </p>
              {v.accuracy.labeled ? (
                <LineChart label={`${v.accuracy.metric} over time`} height={140} time points version={v.accuracy.labeled}
                  data={[v.accuracy.series.map((s) => Math.floor(Date.parse(s.start) / 1000)), v.accuracy.series.map((s) => s.value)]}
                  series={[{ label: v.accuracy.metric, color: "#16a34a" }]} />
              ) : null}
            </section>
          </CardContent>
        </Card>
      ))}

      {summary.ok ? <MonitoringConfigForm model={model.data.name} config={summary.data.config} canManage={canManage} /> : null}
    </div>
  );
}
