"use client";

import { ExternalLink } from "lucide-react";
import Link from "next/link";
import { useMemo, useState } from "react";

import { LineChart } from "@/components/charts/line-chart";
import { DownloadOutput } from "@/components/jobs/download-output";
import { useTopic } from "@/components/realtime/use-topic";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Label } from "@/components/ui/label";
import { Progress } from "@/components/ui/progress";
import { api } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import type { Job } from "@/lib/api/types";
import { EpochCurves, ema, epochPoint } from "@/lib/charts/series";
import { describeEvent, stateVariant, TERMINAL, type EpochMetric, type JobMetrics } from "@/lib/jobs";
import { toast } from "@/lib/stores/toast";

const LOG_LINES = 200;

interface LogLine {
  key: string;
  at: number;
  text: string;
}

declare global {
  interface Window {
    /** Set by the live-page bench (web/scripts/live-bench.mjs): per drawn epoch, [ms from the message's
     * arrival to the next frame, ms from its publication (server clock, same host) to that frame]. */
    __twPaint?: [number, number][];
  }
}

function measurePaint(started: number, publishedSeconds: number): void {
  const samples = window.__twPaint;
  if (!samples) return;
  requestAnimationFrame(() => {
    samples.push([performance.now() - started, Date.now() - publishedSeconds * 1000]);
    if (samples.length > 100_000) samples.splice(0, samples.length - 100_000);
  });
}

/** The live job page: curves that grow with each epoch event on job:<id>, each epoch once. */
export function LiveJob({ initial, metrics }: { initial: Job; metrics: EpochMetric[] }) {
  const [job, setJob] = useState<Job>(initial);
  // Mutated in place by the socket's handlers (no copy per event); `version` tells React it changed.
  const [curves] = useState(() => {
    const c = new EpochCurves();
    c.replace(metrics);
    return c;
  });
  const [version, setVersion] = useState(0);
  const [smoothing, setSmoothing] = useState(0);
  const [log, setLog] = useState<LogLine[]>([]);
  const [listening, setListening] = useState(false);
  const [cancelling, setCancelling] = useState(false);

  const push = (line: LogLine) => setLog((lines) => [line, ...lines].slice(0, LOG_LINES));

  const reload = async () => {
    try {
      const answer = await api<JobMetrics>(`/api/v1/jobs/${initial.id}/metrics`);
      curves.replace(answer.epochs);
      setVersion((v) => v + 1);
    } catch (error) {
      push({ key: `err-${Date.now()}`, at: Date.now(), text: `could not reload the curves: ${error instanceof Error ? error.message : String(error)}` });
    }
  };

  useTopic(`job:${initial.id}`, {
    onSubscribed: () => setListening(true),
    onEvent: (event) => {
      const started = performance.now();
      const data = event.data;
      if (event.type === "epoch") {
        const point = epochPoint(data);
        if (point && curves.add(point)) {
          setVersion((v) => v + 1);
          measurePaint(started, event.ts);
        }
      }
      setJob((current) => ({
        ...current,
        state: typeof data.state === "string" ? data.state : current.state,
        progress: event.type === "epoch" ? data : current.progress,
        error: typeof data.error === "string" ? data.error : current.error,
        result: event.type === "succeeded" ? { ...(current.result ?? {}), ...data } : current.result,
        cancel_requested: event.type === "cancelled" ? true : current.cancel_requested,
      }));
      push({ key: `${event.epoch}-${event.seq}`, at: event.ts * 1000, text: describeEvent(event.type, data) });
    },
    onReset: (reset) => {
      const snapshot = reset.snapshot.job as Job | null | undefined;
      if (snapshot) setJob(snapshot);
      push({ key: `reset-${reset.epoch}-${reset.last_seq}`, at: Date.now(), text: "the event log moved on: redrawn from the job's snapshot" });
      void reload();
    },
  }, 0);

  const data = useMemo(() => {
    const c = curves;
    return {
      epochs: c.epochs.length <= 500 ? c.epochs.join(",") : undefined,
      loss: [c.epochs, ema(c.train, smoothing), ema(c.val, smoothing)] as const,
      metric: [c.epochs, ema(c.metric, smoothing)] as const,
      name: c.metricName || "metric",
      count: c.epochs.length,
      last: c.epochs[c.epochs.length - 1] ?? 0,
    };
    // `version` changes whenever the curves do (they are mutated in place).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [curves, version, smoothing]);

  const cancel = async () => {
    setCancelling(true);
    try {
      setJob(await api<Job>(`/api/v1/jobs/${initial.id}/cancel`, { method: "POST" }));
      toast("Cancel requested", { description: "A running job stops at its next checkpoint." });
    } catch (error) {
      toast("Could not cancel", { description: error instanceof ApiError ? `${error.message} (request id ${error.requestId ?? "–"})` : String(error), variant: "error" });
    } finally {
      setCancelling(false);
    }
  };

  const progress = job.progress ?? {};
  const epochs = typeof progress.epochs === "number" ? progress.epochs : null;
  const epoch = typeof progress.epoch === "number" ? progress.epoch : 0;
  const result = job.result ?? {};
  const producedVersion = typeof result.version === "number" ? result.version : null;
  const terminal = TERMINAL.has(job.state);
  return (
    <div className="grid grid-cols-1 gap-6" data-live={listening ? "subscribed" : "connecting"}>
      <div className="flex flex-wrap items-center gap-3">
        <Badge variant={stateVariant(job.state)} data-testid="job-state">{job.state}</Badge>
        {job.cancel_requested && !terminal ? <Badge variant="warning">cancel requested</Badge> : null}
        {listening ? <Badge variant="info">live</Badge> : null}
        {epochs ? <span className="text-sm text-muted-foreground">epoch {epoch} of {epochs}</span> : null}
        <div className="ml-auto flex flex-wrap gap-2">
          {producedVersion !== null && job.model ? (
            <Button asChild variant="outline" size="sm">
              <Link href={`/models/${encodeURIComponent(job.model)}`} data-testid="produced-version">
                {job.model} v{producedVersion}{typeof result.stage === "string" && result.stage !== "none" ? ` (${result.stage})` : ""}
                <ExternalLink className="size-3.5" aria-hidden />
              </Link>
            </Button>
          ) : null}
          {job.kind === "batch_predict" && job.state === "succeeded" ? (
            <DownloadOutput jobId={job.id} />
          ) : null}
          {!terminal ? (
            <Button variant="destructive" size="sm" onClick={cancel} disabled={cancelling || job.cancel_requested}>
              {cancelling ? "Cancelling…" : "Cancel job"}
            </Button>
          ) : null}
        </div>
      </div>
      {epochs ? <Progress value={Math.min(100, (epoch / epochs) * 100)} label={`Training progress: epoch ${epoch} of ${epochs}`} /> : null}
      {job.error ? <p role="alert" className="rounded-md border border-destructive/40 bg-destructive/5 p-3 text-sm text-destructive">{job.error}</p> : null}

      <Card aria-labelledby="curves-title">
        <CardHeader>
          <div>
            <CardTitle id="curves-title">Curves</CardTitle>
            <CardDescription>One point per epoch, drawn as each epoch event arrives.</CardDescription>
          </div>
          <div className="grid w-48 gap-1">
            <Label htmlFor="smoothing">Smoothing (EMA) {smoothing.toFixed(2)}</Label>
            <input
              id="smoothing"
              type="range"
              min={0}
              max={0.95}
              step={0.05}
              value={smoothing}
              onChange={(event) => setSmoothing(Number(event.target.value))}
              className="accent-primary"
            />
          </div>
        </CardHeader>
        <CardContent
          className="grid grid-cols-1 gap-4 lg:grid-cols-2"
          data-testid="curves"
          data-epoch-count={data.count}
          data-epoch-last={data.last}
          data-epochs={data.count <= 500 ? data.epochs : undefined}
        >
          {data.count ? (
            <>
              <LineChart label="Loss" data={data.loss} version={version + smoothing} series={[{ label: "train loss" }, { label: "validation loss" }]} />
              <LineChart label={data.name} data={data.metric} version={version + smoothing} series={[{ label: data.name, color: "#16a34a" }]} />
            </>
          ) : (
            <p className="text-sm text-muted-foreground">{job.kind !== "train" ? "A batch prediction has no training curves." : terminal ? "This job recorded no epochs." : "The first epoch appears here when it ends."}</p>
          )}
        </CardContent>
      </Card>

      <Card aria-labelledby="log-title">
        <CardHeader>
          <CardTitle id="log-title">Event log</CardTitle>
        </CardHeader>
        <CardContent>
          {log.length ? (
            <ol tabIndex={0} className="grid max-h-72 gap-1 overflow-y-auto font-mono text-xs focus-visible:outline-2 focus-visible:outline-ring" aria-label="Job events, newest first" aria-live="polite" aria-relevant="additions">
              {log.map((line) => (
                <li key={line.key} className="flex gap-2">
                  <span className="text-muted-foreground">{new Date(line.at).toLocaleTimeString()}</span>
                  <span>{line.text}</span>
                </li>
              ))}
            </ol>
          ) : (
            <p className="text-sm text-muted-foreground">Events appear here as they happen.</p>
          )}
        </CardContent>
      </Card>
    </div>
  );
}
