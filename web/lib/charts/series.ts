// Chart data kept as plain arrays (uPlot's AlignedData): the per-epoch curves of a job, where every epoch
// appears once however often the socket replays it, and rolling per-second figures with a fixed length.

export interface EpochPoint {
  epoch: number;
  train_loss: number | null;
  val_loss: number | null;
  metric: number | null;
  metric_name?: string;
}

/** Epoch curves. `add` ignores an epoch it holds; `replace` redraws from a snapshot. Epochs stay sorted. */
export class EpochCurves {
  epochs: number[] = [];
  train: (number | null)[] = [];
  val: (number | null)[] = [];
  metric: (number | null)[] = [];
  metricName = "";
  version = 0;

  add(point: EpochPoint): boolean {
    if (!Number.isInteger(point.epoch) || point.epoch < 1) return false;
    const last = this.epochs[this.epochs.length - 1];
    if (last !== undefined && point.epoch <= last) {
      if (this.epochs.includes(point.epoch)) return false;
      const at = this.epochs.findIndex((e) => e > point.epoch);
      this.epochs.splice(at, 0, point.epoch);
      this.train.splice(at, 0, point.train_loss);
      this.val.splice(at, 0, point.val_loss);
      this.metric.splice(at, 0, point.metric);
    } else {
      this.epochs.push(point.epoch);
      this.train.push(point.train_loss);
      this.val.push(point.val_loss);
      this.metric.push(point.metric);
    }
    if (point.metric_name) this.metricName = point.metric_name;
    this.version += 1;
    return true;
  }

  replace(points: EpochPoint[]): void {
    this.epochs = [];
    this.train = [];
    this.val = [];
    this.metric = [];
    for (const point of points) this.add(point);
    this.version += 1;
  }
}

/** An epoch event's data (EpochReport) as a point; null when it is not one. */
export function epochPoint(data: Record<string, unknown>): EpochPoint | null {
  const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  if (typeof data.epoch !== "number") return null;
  return {
    epoch: data.epoch,
    train_loss: num(data.train_loss),
    val_loss: num(data.val_loss),
    metric: num(data.metric),
    metric_name: typeof data.metric_name === "string" ? data.metric_name : undefined,
  };
}

/** Exponential moving average, TensorBoard's way (debiased), skipping gaps. `weight` in [0, 1). */
export function ema(values: readonly (number | null)[], weight: number): (number | null)[] {
  if (weight <= 0) return values.slice();
  const out: (number | null)[] = [];
  let last = 0;
  let steps = 0;
  for (const value of values) {
    if (value === null || !Number.isFinite(value)) {
      out.push(null);
      continue;
    }
    last = last * weight + (1 - weight) * value;
    steps += 1;
    out.push(last / (1 - weight ** steps));
  }
  return out;
}

/** Fixed-length rolling columns keyed by an increasing x (a Unix second): memory stays bounded. */
export class Rolling {
  readonly x: number[] = [];
  readonly columns: (number | null)[][];

  constructor(readonly width: number, columns: number) {
    this.columns = Array.from({ length: columns }, () => []);
  }

  /** Adds a row unless its x is not after the last one (a replayed point). */
  push(x: number, values: (number | null)[]): boolean {
    const last = this.x[this.x.length - 1];
    if (last !== undefined && x <= last) return false;
    this.x.push(x);
    this.columns.forEach((column, i) => column.push(values[i] ?? null));
    const extra = this.x.length - this.width;
    if (extra > 0) {
      this.x.splice(0, extra);
      for (const column of this.columns) column.splice(0, extra);
    }
    return true;
  }

  clear(): void {
    this.x.length = 0;
    for (const column of this.columns) column.length = 0;
  }
}
