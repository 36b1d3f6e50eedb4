"use client";

import { useEffect, useMemo, useState } from "react";

import { LineChart } from "@/components/charts/line-chart";
import { useTopic } from "@/components/realtime/use-topic";
import { Badge } from "@/components/ui/badge";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import type { components } from "@/lib/api/schema";
import { Rolling } from "@/lib/charts/series";
import { formatNumber } from "@/lib/format";

export type LivePoint = components["schemas"]["LivePointOut"];

const WINDOW_SECONDS = 300;
// requests/s, p50, p99, mean batch, effective max batch, queue, busy %
const COLUMNS = 7;

function row(p: LivePoint): (number | null)[] {
  return [p.requests_per_s, p.p50_ms, p.p99_ms, p.mean_batch_size, p.effective_max_batch_size, p.queue_depth, Math.round(p.busy_share * 1000) / 10];
}

function Figure({ label, value, unit, testId }: { label: string; value: string; unit?: string; testId: string }) {
  return (
    <div className="grid gap-0.5 rounded-lg border p-3">
      <dt className="text-xs text-muted-foreground">{label}</dt>
      <dd className="text-xl font-semibold tabular-nums" data-testid={testId}>
        {value}
        {unit ? <span className="ml-1 text-xs font-normal text-muted-foreground">{unit}</span> : null}
      </dd>
    </div>
  );
}

/** Live serving figures of one model, one point a second from serving:<name>, over every serving process. */
export function Tuner({ model, initial }: { model: string; initial: LivePoint[] }) {
  // Mutated in place by the socket's handlers; `version` tells React they changed.
  const [rolling] = useState(() => {
    const r = new Rolling(WINDOW_SECONDS, COLUMNS);
    for (const p of initial) r.push(p.t, row(p));
    return r;
  });
  const [rejections] = useState(() => new Map<number, Record<string, number>>());
  const [latest, setLatest] = useState<LivePoint | null>(initial[initial.length - 1] ?? null);
  const [version, setVersion] = useState(0);
  const [listening, setListening] = useState(false);
  const [now, setNow] = useState(() => Math.floor(Date.now() / 1000));
  useEffect(() => {
    const timer = setInterval(() => setNow(Math.floor(Date.now() / 1000)), 1000);
    return () => clearInterval(timer);
  }, []);

  const add = (p: LivePoint) => {
    if (!rolling.push(p.t, row(p))) return;
    setLatest(p);
    if (Object.keys(p.rejections).length) rejections.set(p.t, p.rejections);
    for (const t of rejections.keys()) if (t < p.t - WINDOW_SECONDS) rejections.delete(t);
    setVersion((v) => v + 1);
  };

  useTopic(`serving:${model}`, {
    onSubscribed: () => setListening(true),
    onEvent: (event) => {
      if (event.type === "serving.stats") add(event.data as unknown as LivePoint);
    },
    onReset: (reset) => {
      rolling.clear();
      rejections.clear();
      for (const p of (reset.snapshot.points as LivePoint[] | undefined) ?? []) add(p);
      setVersion((v) => v + 1);
    },
  });

  const data = useMemo(() => ({
    rate: [rolling.x, rolling.columns[0]!] as const,
    latency: [rolling.x, rolling.columns[1]!, rolling.columns[2]!] as const,
    batch: [rolling.x, rolling.columns[3]!, rolling.columns[4]!] as const,
    load: [rolling.x, rolling.columns[5]!, rolling.columns[6]!] as const,
    points: rolling.x.length,
    totals: [...rejections.values()].reduce<Record<string, number>>((acc, reasons) => {
      for (const [k, n] of Object.entries(reasons)) acc[k] = (acc[k] ?? 0) + n;
      return acc;
    }, {}),
  // The rolling columns are mutated in place; `version` says when.
  // eslint-disable-next-line react-hooks/exhaustive-deps
  }), [version]);
  const p = latest;
  const fresh = p !== null && now - p.t < 10;
  const totals = data.totals;
  const ms = (v: number | null | undefined) => (v === null || v === undefined ? "–" : formatNumber(v));

  return (
    <Card aria-labelledby="tuner-title" data-live={listening ? "subscribed" : "connecting"}>
      <CardHeader>
        <div>
          <CardTitle id="tuner-title">Live serving figures</CardTitle>
          <CardDescription>Every second, summed over every serving process; the last five minutes.</CardDescription>
        </div>
        {listening ? <Badge variant={fresh ? "success" : "muted"}>{fresh ? "live" : "no traffic"}</Badge> : null}
      </CardHeader>
      <CardContent className="grid gap-4">
        <dl className="grid grid-cols-2 gap-2 sm:grid-cols-3 lg:grid-cols-6" aria-live="off">
          <Figure label="Requests/s" value={fresh ? formatNumber(p.requests_per_s) : "0"} testId="fig-rps" />
          <Figure label="p50 / p99" value={fresh ? `${ms(p.p50_ms)} / ${ms(p.p99_ms)}` : "–"} unit="ms" testId="fig-latency" />
          <Figure label="Mean batch size" value={fresh ? ms(p.mean_batch_size) : "–"} unit="rows" testId="fig-batch" />
          <Figure label="Queue depth" value={fresh ? formatNumber(p.queue_depth) : "0"} unit="rows" testId="fig-queue" />
          <Figure label="Runner busy" value={fresh ? formatNumber(Math.round(p.busy_share * 100)) : "0"} unit="%" testId="fig-busy" />
          <Figure label="Processes" value={fresh ? formatNumber(p.processes) : "–"} testId="fig-processes" />
        </dl>
        <div className="grid grid-cols-1 gap-4 lg:grid-cols-2" data-testid="tuner-charts" data-points={data.points}>
          <LineChart label="Requests per second" data={data.rate} version={version} time series={[{ label: "requests/s" }]} height={160} />
          <LineChart label="Latency (ms)" data={data.latency} version={version} time series={[{ label: "p50" }, { label: "p99" }]} height={160} />
          <LineChart label="Batch size (rows)" data={data.batch} version={version} time series={[{ label: "mean batch" }, { label: "max in force", dash: [4, 4] }]} height={160} />
          <LineChart label="Queue and runner" data={data.load} version={version} time series={[{ label: "queue rows" }, { label: "busy %", right: true }]} height={160} />
        </div>
        <div>
          <h3 className="text-sm font-medium">Rejections in the window</h3>
          {Object.keys(totals).length ? (
            <ul className="mt-1 flex flex-wrap gap-2" data-testid="rejections">
              {Object.entries(totals).map(([reason, n]) => (
                <li key={reason}><Badge variant="destructive">{reason}: {formatNumber(n)}</Badge></li>
              ))}
            </ul>
          ) : (
            <p className="text-sm text-muted-foreground">None: every request got a result.</p>
          )}
        </div>
      </CardContent>
    </Card>
  );
}
