"use client";

import { useRouter } from "next/navigation";
import { useState } from "react";

import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Field } from "@/components/ui/field";
import { Input } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import { api } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import type { Job } from "@/lib/api/types";

/** Every row of the dataset through a model's production version (or a chosen one), into a CSV. */
export function BatchPredict({ datasetId }: { datasetId: number }) {
  const router = useRouter();
  const [model, setModel] = useState("");
  const [version, setVersion] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const fields = error?.fieldErrors() ?? {};
  return (
    <Card aria-labelledby="batch-title">
      <CardHeader>
        <div>
          <CardTitle id="batch-title">Batch prediction</CardTitle>
          <CardDescription>Predict every row with a model; the job page offers the CSV when it is done.</CardDescription>
        </div>
      </CardHeader>
      <CardContent>
        <form
          noValidate
          className="grid gap-4 sm:grid-cols-[1fr_10rem_auto] sm:items-start"
          onSubmit={async (event) => {
            event.preventDefault();
            setBusy(true);
            setError(null);
            try {
              const job = await api<Job>("/api/v1/jobs/batch-predict", {
                method: "POST",
                json: { model: model.trim(), dataset_id: datasetId, ...(version.trim() ? { version: Number(version) } : {}) },
              });
              router.push(`/jobs/${job.id}`);
            } catch (caught) {
              setError(caught instanceof ApiError ? caught : ApiError.network(caught));
              setBusy(false);
            }
          }}
        >
          <Field id="batch-model" label="Model" error={fields.model}>
            <Input value={model} onChange={(e) => setModel(e.target.value)} autoComplete="off" spellCheck={false} />
          </Field>
          <Field id="batch-version" label="Version (optional)" error={fields.version}>
            <Input inputMode="numeric" value={version} onChange={(e) => setVersion(e.target.value)} placeholder="production" />
          </Field>
          <Button type="submit" className="sm:mt-6" disabled={busy || !model.trim()}>{busy ? "Starting…" : "Predict"}</Button>
          {error && !Object.keys(fields).length ? <ErrorState className="sm:col-span-3" error={error} title="Not started" /> : null}
        </form>
      </CardContent>
    </Card>
  );
}
