import { describe, expect, it } from "vitest";

import { EpochCurves, Rolling, ema, epochPoint } from "@/lib/charts/series";
import { hyperFields, hyperValue, limitsText, stepOf } from "@/lib/train";

const point = (epoch: number, loss = 1 / epoch) => ({ epoch, train_loss: loss, val_loss: loss * 1.1, metric: 1 - loss, metric_name: "accuracy" });

describe("EpochCurves", () => {
  it("holds every epoch once, in order, however often events replay", () => {
    const curves = new EpochCurves();
    for (const e of [1, 2, 3, 2, 3, 5, 4, 5, 1]) curves.add(point(e));
    expect(curves.epochs).toEqual([1, 2, 3, 4, 5]);
    expect(curves.train).toEqual([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]);
    expect(curves.metricName).toBe("accuracy");
  });

  it("redraws from a snapshot and refuses epochs that are not positive integers", () => {
    const curves = new EpochCurves();
    curves.add(point(9));
    curves.replace([point(1), point(2)]);
    expect(curves.epochs).toEqual([1, 2]);
    expect(curves.add({ ...point(1), epoch: 0 })).toBe(false);
    expect(curves.add({ ...point(1), epoch: 2.5 })).toBe(false);
  });

  it("reads epoch events, leaving non-finite figures out", () => {
    expect(epochPoint({ epoch: 3, train_loss: 0.5, val_loss: "x", metric: Number.NaN })).toEqual({ epoch: 3, train_loss: 0.5, val_loss: null, metric: null, metric_name: undefined });
    expect(epochPoint({ step: 3 })).toBeNull();
  });
});

describe("ema", () => {
  it("is the identity at 0 and debiased otherwise, skipping gaps", () => {
    expect(ema([1, 2, 3], 0)).toEqual([1, 2, 3]);
    const smooth = ema([2, null, 2, 2], 0.9);
    expect(smooth[1]).toBeNull();
    for (const v of [smooth[0], smooth[2], smooth[3]]) expect(v).toBeCloseTo(2, 10);
    const step = ema([0, 10], 0.5);
    expect(step).toEqual([0, expect.closeTo(20 / 3, 10)]); // (0.5 * 10) / (1 - 0.5 ** 2)
  });
});

describe("Rolling", () => {
  it("keeps the last `width` rows and refuses replayed seconds", () => {
    const rolling = new Rolling(3, 2);
    for (const t of [1, 2, 3, 4, 5]) expect(rolling.push(t, [t, t * 10])).toBe(true);
    expect(rolling.push(5, [0, 0])).toBe(false);
    expect(rolling.x).toEqual([3, 4, 5]);
    expect(rolling.columns).toEqual([[3, 4, 5], [30, 40, 50]]);
    rolling.clear();
    expect(rolling.x).toEqual([]);
  });
});

describe("train wizard helpers", () => {
  const openapi = { components: { schemas: { Hyperparameters: { properties: {
    epochs: { anyOf: [{ type: "integer", minimum: 1, maximum: 100000 }, { type: "null" }], title: "Epochs" },
    lr: { anyOf: [{ type: "number", exclusiveMinimum: 0, maximum: 10 }, { type: "null" }], title: "Lr" },
    hidden: { anyOf: [{ type: "array", items: { type: "integer" } }, { type: "null" }], title: "Hidden" },
  } } } } };

  it("reads the fields and their limits from the API's schema", () => {
    const fields = hyperFields(openapi);
    expect(fields.map((f) => [f.name, f.kind])).toEqual([["epochs", "integer"], ["lr", "number"], ["hidden", "integer-list"]]);
    expect(limitsText(fields[0]!)).toContain("≥ 1");
    expect(limitsText(fields[1]!)).toContain("> 0");
    expect(hyperFields(null)).toEqual([]);
  });

  it("types values, leaving what is not a number for the API to refuse", () => {
    const [epochs, , hidden] = hyperFields(openapi);
    expect(hyperValue(epochs!, " 12 ")).toBe(12);
    expect(hyperValue(epochs!, "")).toBeUndefined();
    expect(hyperValue(epochs!, "many")).toBe("many");
    expect(hyperValue(hidden!, "16, 8")).toEqual([16, 8]);
  });

  it("sends an API field error to its step", () => {
    expect(stepOf("dataset_id")).toBe(0);
    expect(stepOf("target")).toBe(1);
    expect(stepOf("task")).toBe(2);
    expect(stepOf("hyperparameters.epochs")).toBe(3);
    expect(stepOf("model_name")).toBe(4);
  });
});
