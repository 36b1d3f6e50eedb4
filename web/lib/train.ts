// The train wizard's hyperparameter fields, read from the API's own schema (TrainIn.hyperparameters).

export interface HyperField {
  name: string;
  title: string;
  kind: "integer" | "number" | "integer-list";
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  description?: string;
}

type JsonObject = Record<string, unknown>;

/** Fields of the OpenAPI `Hyperparameters` schema (each an `anyOf` of a typed value and null). */
export function hyperFields(openapi: unknown): HyperField[] {
  const schema = ((openapi as JsonObject | null)?.components as JsonObject | undefined)?.schemas as JsonObject | undefined;
  const hyper = schema?.Hyperparameters as JsonObject | undefined;
  const properties = (hyper?.properties ?? {}) as Record<string, JsonObject>;
  const out: HyperField[] = [];
  for (const [name, prop] of Object.entries(properties)) {
    const options = (Array.isArray(prop.anyOf) ? prop.anyOf : [prop]) as JsonObject[];
    const typed = options.find((o) => o.type && o.type !== "null");
    if (!typed) continue;
    const items = typed.items as JsonObject | undefined;
    const kind = typed.type === "array" && items?.type === "integer" ? "integer-list" : typed.type === "integer" ? "integer" : typed.type === "number" ? "number" : null;
    if (!kind) continue;
    const num = (v: unknown) => (typeof v === "number" ? v : undefined);
    out.push({
      name,
      title: typeof prop.title === "string" ? prop.title : name,
      kind,
      minimum: num(typed.minimum),
      maximum: num(typed.maximum),
      exclusiveMinimum: num(typed.exclusiveMinimum),
      exclusiveMaximum: num(typed.exclusiveMaximum),
      description: typeof prop.description === "string" ? prop.description : undefined,
    });
  }
  return out;
}

export function limitsText(field: HyperField): string {
  const low = field.minimum !== undefined ? `≥ ${field.minimum}` : field.exclusiveMinimum !== undefined ? `> ${field.exclusiveMinimum}` : "";
  const high = field.maximum !== undefined ? `≤ ${field.maximum}` : field.exclusiveMaximum !== undefined ? `< ${field.exclusiveMaximum}` : "";
  const kind = field.kind === "integer-list" ? "whole numbers, comma-separated (layer widths)" : field.kind === "integer" ? "a whole number" : "a number";
  return [kind, low, high].filter(Boolean).join(", ") + "; empty: the trainer's default";
}

/** A typed value for the request; text that is not a number is sent as it is, for the API to judge. */
export function hyperValue(field: HyperField, raw: string): unknown {
  const text = raw.trim();
  if (text === "") return undefined;
  if (field.kind === "integer-list") return text.split(/[\s,]+/).filter(Boolean).map((p) => (Number.isFinite(Number(p)) ? Number(p) : p));
  return Number.isFinite(Number(text)) ? Number(text) : text;
}

export const STEPS = ["Dataset", "Target", "Task", "Hyperparameters", "Model"] as const;

/** Which step shows an API error on `field` (e.g. "hyperparameters.epochs", "model_name"). */
export function stepOf(field: string): number {
  if (field.startsWith("dataset")) return 0;
  if (field.startsWith("target") || field.startsWith("features")) return 1;
  if (field.startsWith("task")) return 2;
  if (field.startsWith("hyperparameters")) return 3;
  return 4;
}
