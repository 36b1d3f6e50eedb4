"use client";

import { useRouter } from "next/navigation";
import { useState } from "react";

import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Field } from "@/components/ui/field";
import { Input } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import { api, path } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import type { Model } from "@/lib/api/types";
import { toast } from "@/lib/stores/toast";

const NUMBERS = [
  { key: "max_batch_size", label: "Max batch size", hint: "Rows per forward pass (1 turns batching off).", step: "1" },
  { key: "max_delay_ms", label: "Max delay (ms)", hint: "How long a batch may wait for more rows.", step: "any" },
  { key: "max_queue", label: "Max queue", hint: "Rows waiting before callers get 503.", step: "1" },
  { key: "timeout_ms", label: "Timeout (ms)", hint: "A request's deadline unless it sets its own.", step: "1" },
] as const;

type Key = (typeof NUMBERS)[number]["key"] | "device";

/** Serving settings; the API's field errors are shown on the fields they name. */
export function ServingSettingsForm({ model, canManage }: { model: Model; canManage: boolean }) {
  const router = useRouter();
  const initial: Record<Key, string> = {
    max_batch_size: String(model.serving.max_batch_size),
    max_delay_ms: String(model.serving.max_delay_ms),
    max_queue: String(model.serving.max_queue),
    timeout_ms: String(model.serving.timeout_ms),
    device: model.serving.device,
  };
  const [values, setValues] = useState(initial);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const fields = error?.fieldErrors() ?? {};
  const changed = (Object.keys(values) as Key[]).filter((k) => values[k] !== initial[k]);

  return (
    <Card aria-labelledby="serving-title">
      <CardHeader>
        <div>
          <CardTitle id="serving-title">Serving settings</CardTitle>
          <CardDescription>Applied by every serving process within a second, without a reload.</CardDescription>
        </div>
      </CardHeader>
      <CardContent>
        <form
          className="grid grid-cols-1 gap-4"
          noValidate
          onSubmit={async (event) => {
            event.preventDefault();
            setBusy(true);
            setError(null);
            const patch: Record<string, unknown> = {};
            for (const key of changed) {
              const raw = values[key].trim();
              // Sent as typed; the API says what is wrong with it.
              patch[key] = key === "device" ? raw : raw === "" ? null : Number.isFinite(Number(raw)) ? Number(raw) : raw;
            }
            try {
              await api(path("/api/v1/models/{name}", { name: model.name }), { method: "PATCH", json: patch });
              toast("Serving settings saved", { variant: "success" });
              router.refresh();
            } catch (caught) {
              setError(caught instanceof ApiError ? caught : ApiError.network(caught));
            } finally {
              setBusy(false);
            }
          }}
        >
          <fieldset disabled={!canManage || busy} className="grid gap-4 sm:grid-cols-2">
            <legend className="sr-only">Serving settings</legend>
            {NUMBERS.map((f) => (
              <Field key={f.key} id={`serving-${f.key}`} label={f.label} hint={f.hint} error={fields[f.key]}>
                <Input inputMode="decimal" value={values[f.key]} onChange={(e) => setValues({ ...values, [f.key]: e.target.value })} />
              </Field>
            ))}
            <Field id="serving-device" label="Device" hint="auto, cpu, cuda or cuda:N" error={fields.device}>
              <Input value={values.device} onChange={(e) => setValues({ ...values, device: e.target.value })} spellCheck={false} />
            </Field>
          </fieldset>
          {error && !Object.keys(fields).length ? <ErrorState error={error} title="Not saved" /> : null}
          {error && Object.keys(fields).length ? (
            <p role="alert" className="text-sm text-destructive">
              {error.message}
            </p>
          ) : null}
          {canManage ? (
            <div className="flex gap-2">
              <Button type="submit" disabled={busy || changed.length === 0}>
                {busy ? "Saving…" : "Save settings"}
              </Button>
              <Button variant="ghost" disabled={busy || changed.length === 0} onClick={() => { setValues(initial); setError(null); }}>
                Reset
              </Button>
            </div>
          ) : (
            <p className="text-sm text-muted-foreground">Only the model&apos;s owner (maintainer or higher) or an admin can change these.</p>
          )}
        </form>
      </CardContent>
    </Card>
  );
}
