"use client";

import { Plus } from "lucide-react";
import { useRouter } from "next/navigation";
import { useState } from "react";

import { Button } from "@/components/ui/button";
import { Dialog, DialogContent, DialogDescription, DialogFooter, DialogHeader, DialogTitle, DialogTrigger } from "@/components/ui/dialog";
import { Field } from "@/components/ui/field";
import { Input, NativeSelect, Textarea } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import { api } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import type { Model } from "@/lib/api/types";
import { toast } from "@/lib/stores/toast";

export function CreateModelDialog() {
  const router = useRouter();
  const [open, setOpen] = useState(false);
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [visibility, setVisibility] = useState("private");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const fields = error?.fieldErrors() ?? {};
  const nameError = fields.name ?? (error?.status === 409 ? error.message : undefined);

  return (
    <Dialog open={open} onOpenChange={setOpen}>
      <DialogTrigger asChild>
        <Button>
          <Plus aria-hidden /> New model
        </Button>
      </DialogTrigger>
      <DialogContent>
        <DialogHeader>
          <DialogTitle>New model</DialogTitle>
          <DialogDescription>A name for its versions to live under. Publish or train versions next.</DialogDescription>
        </DialogHeader>
        <form
          className="grid grid-cols-1 gap-4"
          onSubmit={async (event) => {
            event.preventDefault();
            setBusy(true);
            setError(null);
            try {
              const model = await api<Model>("/api/v1/models", { method: "POST", json: { name, description, visibility } });
              toast(`Model ${model.name} created`, { variant: "success" });
              setOpen(false);
              router.push(`/models/${encodeURIComponent(model.name)}`);
            } catch (caught) {
              setError(caught instanceof ApiError ? caught : ApiError.network(caught));
            } finally {
              setBusy(false);
            }
          }}
        >
          <Field id="model-name" label="Name" hint="Lowercase letters, digits, - and _; it is part of every URL of the model." error={nameError}>
            <Input value={name} onChange={(e) => setName(e.target.value)} required maxLength={64} autoCapitalize="none" spellCheck={false} />
          </Field>
          <Field id="model-description" label="Description" error={fields.description}>
            <Textarea value={description} onChange={(e) => setDescription(e.target.value)} rows={3} />
          </Field>
          <Field id="model-visibility" label="Visibility" error={fields.visibility}>
            <NativeSelect value={visibility} onChange={(e) => setVisibility(e.target.value)}>
              <option value="private">Private: you and admins</option>
              <option value="shared">Shared: people you name</option>
              <option value="public">Public: every user</option>
            </NativeSelect>
          </Field>
          {error && !nameError && !Object.keys(fields).length ? <ErrorState error={error} title="The model was not created" /> : null}
          <DialogFooter>
            <Button type="submit" disabled={busy || !name}>
              {busy ? "Creating…" : "Create model"}
            </Button>
          </DialogFooter>
        </form>
      </DialogContent>
    </Dialog>
  );
}
