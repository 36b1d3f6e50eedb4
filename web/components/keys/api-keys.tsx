"use client";

import { KeyRound, Plus, Trash2 } from "lucide-react";
import { useState } from "react";

import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { CopyButton } from "@/components/ui/copy-button";
import {
  AlertDialog,
  AlertDialogAction,
  AlertDialogCancel,
  AlertDialogContent,
  AlertDialogDescription,
  AlertDialogTitle,
  AlertDialogTrigger,
  Dialog,
  DialogContent,
  DialogDescription,
  DialogFooter,
  DialogHeader,
  DialogTitle,
  DialogTrigger,
} from "@/components/ui/dialog";
import { buttonVariants } from "@/components/ui/button";
import { Field } from "@/components/ui/field";
import { Input } from "@/components/ui/input";
import { EmptyState, ErrorState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { Time } from "@/components/ui/time";
import { api, path } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import type { ApiKey, ApiKeyCreated } from "@/lib/api/types";
import { toast } from "@/lib/stores/toast";

function CreateKey({ onCreated }: { onCreated: (key: ApiKeyCreated) => void }) {
  const [open, setOpen] = useState(false);
  const [name, setName] = useState("");
  const [created, setCreated] = useState<ApiKeyCreated | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <Dialog
      open={open}
      onOpenChange={(next) => {
        setOpen(next);
        if (!next) {
          // The secret leaves memory with the dialog: it is shown once.
          setCreated(null);
          setName("");
          setError(null);
        }
      }}
    >
      <DialogTrigger asChild>
        <Button>
          <Plus aria-hidden /> New key
        </Button>
      </DialogTrigger>
      <DialogContent>
        {created ? (
          <>
            <DialogHeader>
              <DialogTitle>Copy your new key now</DialogTitle>
              <DialogDescription>This is the only time it is shown. Store it somewhere safe; if it is lost, revoke it and make another.</DialogDescription>
            </DialogHeader>
            <div className="grid gap-2">
              <code className="rounded-md bg-muted p-3 font-mono text-xs break-all select-all" data-testid="new-key">
                {created.key}
              </code>
              <CopyButton value={created.key} label="Copy key" />
            </div>
            <DialogFooter>
              <Button onClick={() => setOpen(false)}>Done</Button>
            </DialogFooter>
          </>
        ) : (
          <>
            <DialogHeader>
              <DialogTitle>New API key</DialogTitle>
              <DialogDescription>A name helps you tell keys apart later (where it is used, for example).</DialogDescription>
            </DialogHeader>
            <form
              className="grid grid-cols-1 gap-4"
              onSubmit={async (event) => {
                event.preventDefault();
                setBusy(true);
                setError(null);
                try {
                  const key = await api<ApiKeyCreated>("/api/v1/auth/api-keys", { method: "POST", json: { name } });
                  setCreated(key);
                  onCreated(key);
                } catch (caught) {
                  setError(caught instanceof ApiError ? caught : ApiError.network(caught));
                } finally {
                  setBusy(false);
                }
              }}
            >
              <Field id="key-name" label="Name" error={error?.fieldErrors().name}>
                <Input value={name} onChange={(e) => setName(e.target.value)} maxLength={100} placeholder="nightly batch job" />
              </Field>
              {error && !error.fieldErrors().name ? <ErrorState error={error} title="No key was made" /> : null}
              <DialogFooter>
                <Button type="submit" disabled={busy}>
                  {busy ? "Creating…" : "Create key"}
                </Button>
              </DialogFooter>
            </form>
          </>
        )}
      </DialogContent>
    </Dialog>
  );
}

function RevokeKey({ apiKey, onRevoked }: { apiKey: ApiKey; onRevoked: () => void }) {
  const [busy, setBusy] = useState(false);
  return (
    <AlertDialog>
      <AlertDialogTrigger asChild>
        <Button variant="ghost" size="sm" aria-label={`Revoke key ${apiKey.prefix}`}>
          <Trash2 aria-hidden /> Revoke
        </Button>
      </AlertDialogTrigger>
      <AlertDialogContent>
        <AlertDialogTitle>Revoke key {apiKey.name || apiKey.prefix}?</AlertDialogTitle>
        <AlertDialogDescription>Anything still using it is refused from now on. This cannot be undone.</AlertDialogDescription>
        <div className="flex flex-col-reverse gap-2 sm:flex-row sm:justify-end">
          <AlertDialogCancel>Keep it</AlertDialogCancel>
          <AlertDialogAction
            className={buttonVariants({ variant: "destructive" })}
            disabled={busy}
            onClick={async () => {
              setBusy(true);
              try {
                await api(path("/api/v1/auth/api-keys/{prefix}", { prefix: apiKey.prefix }), { method: "DELETE" });
                toast(`Key ${apiKey.prefix} revoked`, { variant: "success" });
                onRevoked();
              } catch (caught) {
                const error = caught instanceof ApiError ? caught : ApiError.network(caught);
                toast("The key was not revoked", { variant: "error", description: `${error.message}${error.requestId ? ` (request ${error.requestId})` : ""}` });
              } finally {
                setBusy(false);
              }
            }}
          >
            Revoke key
          </AlertDialogAction>
        </div>
      </AlertDialogContent>
    </AlertDialog>
  );
}

export function ApiKeys({ initial }: { initial: ApiKey[] }) {
  const [keys, setKeys] = useState(initial);
  return (
    <Card aria-labelledby="keys-title">
      <CardHeader>
        <CardTitle id="keys-title" className="flex items-center gap-2">
          <KeyRound className="size-4" aria-hidden /> Your keys
        </CardTitle>
        <CreateKey onCreated={(key) => setKeys((all) => [{ prefix: key.prefix, name: key.name, created_at: key.created_at, last_used_at: key.last_used_at }, ...all])} />
      </CardHeader>
      <CardContent>
        {keys.length === 0 ? (
          <EmptyState title="No keys">Make one for each script or service that calls Torchwire.</EmptyState>
        ) : (
          <Table label="API keys">
            <TableHeader>
              <TableRow>
                <TableHead>Name</TableHead>
                <TableHead>Prefix</TableHead>
                <TableHead>Created</TableHead>
                <TableHead>Last used</TableHead>
                <TableHead>
                  <span className="sr-only">Actions</span>
                </TableHead>
              </TableRow>
            </TableHeader>
            <TableBody>
              {keys.map((key) => (
                <TableRow key={key.prefix} data-testid={`key-${key.prefix}`}>
                  <TableCell>{key.name || <span className="text-muted-foreground">unnamed</span>}</TableCell>
                  <TableCell>
                    <code className="font-mono text-xs">tw_{key.prefix}_…</code>
                  </TableCell>
                  <TableCell className="text-xs">
                    <Time iso={key.created_at} />
                  </TableCell>
                  <TableCell className="text-xs">{key.last_used_at ? <Time iso={key.last_used_at} /> : <span className="text-muted-foreground">never</span>}</TableCell>
                  <TableCell className="text-right">
                    <RevokeKey apiKey={key} onRevoked={() => setKeys((all) => all.filter((k) => k.prefix !== key.prefix))} />
                  </TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        )}
      </CardContent>
    </Card>
  );
}
