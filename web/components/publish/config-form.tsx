"use client";

import { Field } from "@/components/ui/field";
import { Input, NativeSelect } from "@/components/ui/input";
import type { JsonSchema } from "@/lib/api/types";

/** The text a user edits for one config field; parsed back with `parseField`. */
export type ConfigText = Record<string, string>;

function kind(schema: JsonSchema): string {
  const types = Array.isArray(schema.type) ? schema.type.filter((t) => t !== "null") : [schema.type];
  if (schema.enum) return "enum";
  if (types[0] === "array") return "array";
  return types[0] ?? "string";
}

export function configToText(schema: JsonSchema, config: Record<string, unknown> | null): ConfigText {
  const out: ConfigText = {};
  for (const [key, field] of Object.entries(schema.properties ?? {})) {
    const value = config && key in config ? config[key] : field.default;
    out[key] = value === undefined || value === null ? "" : Array.isArray(value) ? value.join(", ") : String(value);
  }
  return out;
}

/** Config from the form's text; a value that does not parse is passed on as typed (the server names the problem). */
export function textToConfig(schema: JsonSchema, text: ConfigText): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(schema.properties ?? {})) {
    const raw = (text[key] ?? "").trim();
    if (raw === "") continue;
    const k = kind(field);
    if (k === "integer" || k === "number" || (k === "enum" && typeof field.enum?.[0] === "number")) {
      out[key] = Number.isFinite(Number(raw)) ? Number(raw) : raw;
    } else if (k === "array") {
      out[key] = raw.split(/[\s,]+/).filter(Boolean).map((part) => (Number.isFinite(Number(part)) ? Number(part) : part));
    } else if (k === "boolean") {
      out[key] = raw === "true";
    } else {
      out[key] = raw;
    }
  }
  return out;
}

export function ConfigForm({ schema, text, onChange, error }: { schema: JsonSchema; text: ConfigText; onChange: (text: ConfigText) => void; error?: string | null }) {
  const required = new Set(schema.required ?? []);
  return (
    <fieldset className="grid gap-4 sm:grid-cols-2">
      <legend className="mb-2 text-sm font-medium">Config</legend>
      {Object.entries(schema.properties ?? {}).map(([key, field]) => {
        const k = kind(field);
        const id = `config-${key}`;
        const label = `${key}${required.has(key) ? "" : " (optional)"}`;
        const hint = field.description ?? (k === "array" ? "Comma-separated, e.g. 16, 32" : field.minimum !== undefined ? `At least ${field.minimum}` : undefined);
        const set = (value: string) => onChange({ ...text, [key]: value });
        return (
          <Field key={key} id={id} label={label} hint={hint}>
            {k === "enum" ? (
              <NativeSelect value={text[key] ?? ""} onChange={(e) => set(e.target.value)}>
                {(field.enum ?? []).map((option) => (
                  <option key={String(option)} value={String(option)}>
                    {String(option)}
                  </option>
                ))}
              </NativeSelect>
            ) : (
              <Input value={text[key] ?? ""} inputMode={k === "integer" || k === "number" ? "decimal" : undefined} onChange={(e) => set(e.target.value)} spellCheck={false} />
            )}
          </Field>
        );
      })}
      {error ? (
        <p role="alert" className="text-sm text-destructive sm:col-span-2">
          {error}
        </p>
      ) : null}
    </fieldset>
  );
}
