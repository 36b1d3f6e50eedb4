"use client";

import { useRouter } from "next/navigation";
import { useState } from "react";

import { Button } from "@/components/ui/button";
import { AlertDialog, AlertDialogCancel, AlertDialogContent, AlertDialogDescription, AlertDialogTitle, AlertDialogTrigger } from "@/components/ui/dialog";
import { Field } from "@/components/ui/field";
import { NativeSelect, Textarea } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import { api, path } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import { toast } from "@/lib/stores/toast";

const STAGES = ["production", "staging", "archived"] as const;

/** Promotion with a confirmation: the stage, a reason for the history, and what it will do. */
export function PromoteDialog({ model, version, stage, defaultOpen = false }: { model: string; version: number; stage: string; defaultOpen?: boolean }) {
  const router = useRouter();
  const choices = STAGES.filter((s) => s !== stage);
  const [open, setOpen] = useState(defaultOpen);
  const [target, setTarget] = useState<string>(choices[0] ?? "production");
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);

  return (
    <AlertDialog
      open={open}
      onOpenChange={(next) => {
        setOpen(next);
        if (next) {
          setTarget(choices[0] ?? "production");
          setReason("");
          setError(null);
        }
      }}
    >
      <AlertDialogTrigger asChild>
        <Button variant="outline" size="sm" aria-label={`Promote version ${version}`}>
          Promote…
        </Button>
      </AlertDialogTrigger>
      <AlertDialogContent>
        <AlertDialogTitle>Promote version {version}</AlertDialogTitle>
        <AlertDialogDescription>
          {target === "production"
            ? "Calls without a version go to this version once each serving process has loaded it; the current production version is archived."
            : `The version moves to ${target}. It is recorded in the promotion history.`}
        </AlertDialogDescription>
        <form
          className="grid grid-cols-1 gap-4"
          onSubmit={async (event) => {
            event.preventDefault();
            setBusy(true);
            setError(null);
            try {
              await api(path("/api/v1/models/{name}/versions/{version}/promote", { name: model, version }), { method: "POST", json: { stage: target, reason } });
              toast(`Version ${version} is now in ${target}`, { variant: "success" });
              setOpen(false);
              router.refresh();
            } catch (caught) {
              setError(caught instanceof ApiError ? caught : ApiError.network(caught));
            } finally {
              setBusy(false);
            }
          }}
        >
          <Field id={`promote-stage-${version}`} label="Stage">
            <NativeSelect value={target} onChange={(e) => setTarget(e.target.value)}>
              {choices.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </NativeSelect>
          </Field>
          <Field id={`promote-reason-${version}`} label="Reason" hint="Kept in the promotion history." error={error?.fieldErrors().reason}>
            <Textarea value={reason} onChange={(e) => setReason(e.target.value)} maxLength={500} rows={2} />
          </Field>
          {error && !error.fieldErrors().reason ? <ErrorState error={error} title="Not promoted" /> : null}
          <div className="flex flex-col-reverse gap-2 sm:flex-row sm:justify-end">
            <AlertDialogCancel type="button">Cancel</AlertDialogCancel>
            <Button type="submit" disabled={busy}>
              {busy ? "Promoting…" : `Promote to ${target}`}
            </Button>
          </div>
        </form>
      </AlertDialogContent>
    </AlertDialog>
  );
}
