"use client";

import { useRouter } from "next/navigation";
import { useMemo, useState } from "react";

import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Field } from "@/components/ui/field";
import { Input, NativeSelect } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import { api } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import type { Dataset, DatasetColumn, Job } from "@/lib/api/types";
import { toast } from "@/lib/stores/toast";
import { hyperValue, limitsText, STEPS, stepOf, type HyperField } from "@/lib/train";
import { cn } from "@/lib/utils";

/** dataset → target → task → hyperparameters → model name and "promote when done"; then the live job page. */
export function TrainWizard({ datasets, hyper, initialDataset }: { datasets: Dataset[]; hyper: HyperField[]; initialDataset: number | null }) {
  const router = useRouter();
  const [step, setStep] = useState(0);
  const [datasetId, setDatasetId] = useState<string>(initialDataset !== null ? String(initialDataset) : datasets[0] ? String(datasets[0].id) : "");
  const [target, setTarget] = useState("");
  const [task, setTask] = useState<"classification" | "regression">("classification");
  const [values, setValues] = useState<Record<string, string>>({});
  const [modelName, setModelName] = useState("");
  const [promote, setPromote] = useState(true);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const fields = error?.fieldErrors() ?? {};

  const dataset = datasets.find((d) => String(d.id) === datasetId) ?? null;
  const columns = useMemo(() => (dataset?.columns ?? []) as unknown as DatasetColumn[], [dataset]);
  const targetColumn = columns.find((c) => c.name === target) ?? null;

  const chooseTarget = (name: string) => {
    setTarget(name);
    const column = columns.find((c) => c.name === name);
    if (column) setTask(column.kind === "numeric" && column.distinct > 20 ? "regression" : "classification");
  };

  const ready = [dataset !== null, target !== "", true, true, modelName.trim() !== ""];
  const submit = async () => {
    setBusy(true);
    setError(null);
    const hyperparameters: Record<string, unknown> = {};
    for (const f of hyper) {
      const value = hyperValue(f, values[f.name] ?? "");
      if (value !== undefined) hyperparameters[f.name] = value;
    }
    try {
      const job = await api<Job>("/api/v1/jobs/train", {
        method: "POST",
        json: { dataset_id: Number(datasetId), target, task, model_name: modelName.trim(), hyperparameters, promote },
      });
      toast(`Training ${job.model ?? modelName} (job ${job.id})`, { variant: "success" });
      router.push(`/jobs/${job.id}`);
    } catch (caught) {
      const apiError = caught instanceof ApiError ? caught : ApiError.network(caught);
      setError(apiError);
      const first = Object.keys(apiError.fieldErrors())[0];
      if (first !== undefined) setStep(stepOf(first));
      setBusy(false);
    }
  };
  const err = (name: string) => fields[name] ?? null;

  return (
    <Card aria-labelledby="wizard-title">
      <CardHeader>
        <div>
          <CardTitle id="wizard-title">Train a model</CardTitle>
          <CardDescription>A tabular network on one of your datasets; the job page shows it learn, live.</CardDescription>
        </div>
      </CardHeader>
      <CardContent className="grid gap-6">
        <ol className="flex flex-wrap gap-2 text-sm" aria-label="Steps">
          {STEPS.map((label, i) => (
            <li key={label}>
              <button
                type="button"
                onClick={() => setStep(i)}
                disabled={i > 0 && !ready.slice(0, i).every(Boolean)}
                aria-current={i === step ? "step" : undefined}
                className={cn("rounded-md px-2.5 py-1 text-muted-foreground hover:bg-accent disabled:opacity-50 focus-visible:outline-2 focus-visible:outline-ring", i === step && "bg-accent text-foreground",
                  Object.keys(fields).some((f) => stepOf(f) === i) && "text-destructive")}
              >
                {i + 1}. {label}
              </button>
            </li>
          ))}
        </ol>
        <form
          noValidate
          className="grid gap-4"
          onSubmit={(event) => {
            event.preventDefault();
            if (step < STEPS.length - 1) setStep(step + 1);
            else void submit();
          }}
        >
          {step === 0 ? (
            <Field id="train-dataset" label="Dataset" hint={dataset ? `${dataset.row_count} rows, ${dataset.columns.length} columns` : "Upload one on the Datasets page first."} error={err("dataset_id")}>
              <NativeSelect value={datasetId} onChange={(e) => { setDatasetId(e.target.value); setTarget(""); }}>
                {datasets.map((d) => <option key={d.id} value={d.id}>{d.name} (#{d.id})</option>)}
              </NativeSelect>
            </Field>
          ) : null}
          {step === 1 ? (
            <Field id="train-target" label="Target column" hint="What the model learns to predict; every other column is an input." error={err("target")}>
              <NativeSelect value={target} onChange={(e) => chooseTarget(e.target.value)}>
                <option value="">Choose a column…</option>
                {columns.map((c) => <option key={c.name} value={c.name}>{c.name} ({c.kind}, {c.distinct} distinct)</option>)}
              </NativeSelect>
            </Field>
          ) : null}
          {step === 2 ? (
            <fieldset className="grid gap-2">
              <legend className="text-sm font-medium">Task</legend>
              {(["classification", "regression"] as const).map((t) => (
                <label key={t} className="flex items-center gap-2 text-sm">
                  <input type="radio" name="task" value={t} checked={task === t} onChange={() => setTask(t)} className="accent-primary" />
                  {t === "classification" ? "Classification: one of a few labels" : "Regression: a number"}
                </label>
              ))}
              {targetColumn ? <p className="text-xs text-muted-foreground">{target} is {targetColumn.kind} with {targetColumn.distinct} distinct values.</p> : null}
              {err("task") ? <p className="text-xs font-medium text-destructive">{err("task")}</p> : null}
            </fieldset>
          ) : null}
          {step === 3 ? (
            <div className="grid gap-4 sm:grid-cols-2">
              {hyper.map((f) => (
                <Field key={f.name} id={`hp-${f.name}`} label={f.title} hint={limitsText(f)} error={err(`hyperparameters.${f.name}`) ?? err(f.name)}>
                  <Input inputMode={f.kind === "integer-list" ? "text" : "decimal"} value={values[f.name] ?? ""} placeholder="default" onChange={(e) => setValues({ ...values, [f.name]: e.target.value })} />
                </Field>
              ))}
            </div>
          ) : null}
          {step === 4 ? (
            <div className="grid gap-4">
              <Field id="train-model" label="Model name" hint="A new model, or one of yours to add a version to. Lowercase letters, digits, - and _." error={err("model_name")}>
                <Input value={modelName} onChange={(e) => setModelName(e.target.value)} autoComplete="off" spellCheck={false} />
              </Field>
              <label className="flex items-center gap-2 text-sm">
                <input type="checkbox" checked={promote} onChange={(e) => setPromote(e.target.checked)} className="accent-primary" />
                Promote to production when training succeeds
              </label>
            </div>
          ) : null}
          {error && !Object.keys(fields).length ? <ErrorState error={error} title="Training was not started" /> : null}
          {error && Object.keys(fields).length ? <p role="alert" className="text-sm text-destructive">{error.message}</p> : null}
          <div className="flex gap-2">
            {step > 0 ? <Button variant="outline" onClick={() => setStep(step - 1)} disabled={busy}>Back</Button> : null}
            <Button type="submit" disabled={busy || !ready[step]}>
              {step < STEPS.length - 1 ? "Next" : busy ? "Starting…" : "Start training"}
            </Button>
          </div>
        </form>
      </CardContent>
    </Card>
  );
}
