"use client";

import { useRouter } from "next/navigation";
import { useState } from "react";

import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Field } from "@/components/ui/field";
import { NativeSelect, Textarea } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import { api, path } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import type { Model } from "@/lib/api/types";
import { toast } from "@/lib/stores/toast";

function parseUsers(text: string): string[] {
  return [...new Set(text.split(/[\s,]+/).map((u) => u.trim()).filter(Boolean))];
}

export function SharingForm({ model, canManage }: { model: Model; canManage: boolean }) {
  const router = useRouter();
  const [visibility, setVisibility] = useState(model.visibility);
  const [users, setUsers] = useState(model.sharing.join("\n"));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const fields = error?.fieldErrors() ?? {};

  return (
    <Card aria-labelledby="sharing-title">
      <CardHeader>
        <div>
          <CardTitle id="sharing-title">Visibility and sharing</CardTitle>
          <CardDescription>Who can see and call this model.</CardDescription>
        </div>
      </CardHeader>
      <CardContent>
        <form
          className="grid grid-cols-1 gap-4"
          onSubmit={async (event) => {
            event.preventDefault();
            setBusy(true);
            setError(null);
            try {
              await api(path("/api/v1/models/{name}", { name: model.name }), { method: "PATCH", json: { visibility, sharing: parseUsers(users) } });
              toast("Sharing saved", { variant: "success" });
              router.refresh();
            } catch (caught) {
              setError(caught instanceof ApiError ? caught : ApiError.network(caught));
            } finally {
              setBusy(false);
            }
          }}
        >
          <fieldset disabled={!canManage || busy} className="grid grid-cols-1 gap-4">
            <legend className="sr-only">Visibility and sharing</legend>
            <Field id="sharing-visibility" label="Visibility" error={fields.visibility}>
              <NativeSelect value={visibility} onChange={(e) => setVisibility(e.target.value)}>
                <option value="private">Private: the owner and admins</option>
                <option value="shared">Shared: the users listed below</option>
                <option value="public">Public: every user</option>
              </NativeSelect>
            </Field>
            <Field id="sharing-users" label="Shared with" hint="Usernames, one per line or separated by commas." error={fields.sharing}>
              <Textarea value={users} onChange={(e) => setUsers(e.target.value)} rows={3} spellCheck={false} />
            </Field>
          </fieldset>
          {error && !Object.keys(fields).length ? <ErrorState error={error} title="Not saved" /> : null}
          {canManage ? (
            <div>
              <Button type="submit" disabled={busy}>
                {busy ? "Saving…" : "Save sharing"}
              </Button>
            </div>
          ) : null}
        </form>
      </CardContent>
    </Card>
  );
}
