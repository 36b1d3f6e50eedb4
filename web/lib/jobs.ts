// Job helpers shared by the job screens.
import type { components } from "@/lib/api/schema";

export type JobMetrics = components["schemas"]["JobMetricsOut"];
export type EpochMetric = components["schemas"]["EpochMetricOut"];

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function stateVariant(state: string): "success" | "destructive" | "warning" | "muted" {
  if (state === "succeeded") return "success";
  if (state === "failed") return "destructive";
  if (state === "running" || state === "queued") return "warning";
  return "muted";
}

/** A one-line description of a job event for the event log. */
export function describeEvent(type: string, data: Record<string, unknown>): string {
  const n = (v: unknown) => (typeof v === "number" ? Number(v.toPrecision(4)).toString() : "–");
  switch (type) {
    case "epoch":
      return `epoch ${n(data.epoch)}/${n(data.epochs)}: loss ${n(data.train_loss)}, val ${n(data.val_loss)}, ${String(data.metric_name ?? "metric")} ${n(data.metric)}`;
    case "started":
      return `started (attempt ${n(data.attempt)}${data.worker ? ` on ${String(data.worker)}` : ""})`;
    case "resumed":
      return `resumed after epoch ${n(data.epoch)} (attempt ${n(data.attempt)})`;
    case "failed":
      return `failed: ${String(data.error ?? "")}`;
    case "succeeded":
      return typeof data.version === "number" ? `succeeded: version ${data.version}` : "succeeded";
    default:
      return type;
  }
}
