// Request bodies of the three protocols for one set of inputs, and reading their answers.
import type { Signature, TensorInfoSpec } from "@/lib/api/types";

export type Protocol = "rest" | "v2" | "ws";
export type InputValues = Record<string, unknown>;

/** Elements per batch row of an input (its shape without the leading batch dimension). */
export function rowShape(spec: TensorInfoSpec): number[] {
  return spec.shape.slice(1).map((d) => (d < 0 ? 1 : d));
}

export function rowElements(spec: TensorInfoSpec): number {
  return rowShape(spec).reduce((a, b) => a * b, 1);
}

function reshape(flat: unknown[], shape: number[]): unknown {
  if (shape.length === 0) return flat[0];
  if (shape.length === 1) return flat.slice(0, shape[0]);
  const [first, ...rest] = shape;
  const step = rest.reduce((a, b) => a * b, 1);
  return Array.from({ length: first! }, (_, i) => reshape(flat.slice(i * step, (i + 1) * step), rest));
}

export function flatten(value: unknown): unknown[] {
  return Array.isArray(value) ? value.flatMap(flatten) : [value];
}

export function zeroRow(spec: TensorInfoSpec): unknown {
  const fill = spec.datatype === "BOOL" ? false : spec.datatype === "BYTES" ? "" : 0;
  return [reshape(Array(rowElements(spec)).fill(fill), rowShape(spec))];
}

/** One zero row per input: a starting point that has the right shape. */
export function defaultInputs(signature: Signature): InputValues {
  return Object.fromEntries(signature.inputs.map((spec) => [spec.name, zeroRow(spec)]));
}

/** Batch dimension of a nested list (rows). */
function rows(value: unknown): number {
  return Array.isArray(value) ? value.length : 1;
}

export function shapeOf(value: unknown): number[] {
  const shape: number[] = [];
  let cursor: unknown = value;
  while (Array.isArray(cursor)) {
    shape.push(cursor.length);
    cursor = cursor[0];
  }
  return shape;
}

export function restBody(signature: Signature, inputs: InputValues): unknown {
  if (signature.inputs.length === 1) return { inputs: inputs[signature.inputs[0]!.name] };
  return { inputs };
}

export function v2Body(signature: Signature, inputs: InputValues, id?: string): Record<string, unknown> {
  const body: Record<string, unknown> = {
    inputs: signature.inputs.map((spec) => {
      const value = inputs[spec.name];
      return { name: spec.name, shape: shapeOf(value).length ? shapeOf(value) : [rows(value)], datatype: spec.datatype, data: flatten(value) };
    }),
  };
  if (id !== undefined) body.id = id;
  return body;
}

export interface CallResult {
  protocol: Protocol;
  ok: boolean;
  status: number | null;
  latencyMs: number;
  requestId: string | null;
  predictionId: string | null;
  body: unknown;
  error: string | null;
}

/** prediction_id from a REST answer (top level) or a V2/websocket one (parameters). */
export function predictionIdOf(body: unknown): string | null {
  if (!body || typeof body !== "object") return null;
  const b = body as { prediction_id?: unknown; parameters?: { prediction_id?: unknown } };
  if (typeof b.prediction_id === "string") return b.prediction_id;
  if (typeof b.parameters?.prediction_id === "string") return b.parameters.prediction_id;
  return null;
}

/** JSON with two-space indents, but arrays of plain values on one line (rows stay readable). */
export function prettyJson(value: unknown): string {
  const placeholders: string[] = [];
  const text = JSON.stringify(
    value,
    (_key, v: unknown) => {
      if (Array.isArray(v) && v.every((item) => item === null || typeof item !== "object")) {
        placeholders.push(JSON.stringify(v));
        return `\u0000${placeholders.length - 1}\u0000`;
      }
      return v;
    },
    2,
  );
  return (text ?? "").replace(/"\\u0000(\d+)\\u0000"/g, (_, i: string) => placeholders[Number(i)]!);
}
