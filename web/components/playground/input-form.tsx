"use client";

import { Input } from "@/components/ui/input";
import type { Signature, TensorInfoSpec } from "@/lib/api/types";
import { rowElements, rowShape, type InputValues } from "@/lib/playground/requests";

const MAX_FIELDS = 64;

function parse(spec: TensorInfoSpec, raw: string): unknown {
  if (spec.datatype === "BYTES") return raw;
  if (spec.datatype === "BOOL") return raw === "true" || raw === "1";
  const value = Number(raw);
  return raw.trim() !== "" && Number.isFinite(value) ? value : raw;
}

/** One row of each input as fields, where an input is a short vector; anything bigger is edited as JSON. */
export function InputForm({ signature, inputs, onChange }: { signature: Signature; inputs: InputValues; onChange: (inputs: InputValues) => void }) {
  return (
    <div className="grid grid-cols-1 gap-4">
      {signature.inputs.map((spec) => {
        const shape = rowShape(spec);
        const count = rowElements(spec);
        const heading = (
          <div className="flex flex-wrap items-baseline gap-2 text-sm">
            <span className="font-medium">{spec.name}</span>
            <span className="text-xs text-muted-foreground">
              {spec.datatype} {JSON.stringify(spec.shape)}
            </span>
          </div>
        );
        if (shape.length > 1 || count > MAX_FIELDS) {
          return (
            <div key={spec.name} className="grid gap-1">
              {heading}
              <p className="text-xs text-muted-foreground">{count} values per row: edit them in the request body below.</p>
            </div>
          );
        }
        const row = (inputs[spec.name] as unknown[] | undefined)?.[0];
        const values = shape.length === 0 ? [row] : ((row as unknown[] | undefined) ?? []);
        return (
          <fieldset key={spec.name} className="grid gap-2">
            <legend>{heading}</legend>
            <div className="grid grid-cols-2 gap-2 sm:grid-cols-4">
              {Array.from({ length: count }, (_, i) => (
                <Input
                  key={i}
                  aria-label={`${spec.name}[${i}]`}
                  placeholder={`[${i}]`}
                  inputMode={spec.datatype === "BYTES" || spec.datatype === "BOOL" ? undefined : "decimal"}
                  value={values[i] === undefined ? "" : String(values[i])}
                  onChange={(e) => {
                    const next = [...values];
                    next[i] = parse(spec, e.target.value);
                    onChange({ ...inputs, [spec.name]: [shape.length === 0 ? next[0] : next] });
                  }}
                />
              ))}
            </div>
          </fieldset>
        );
      })}
    </div>
  );
}
