"use client";

import { useState } from "react";

import { Button } from "@/components/ui/button";
import { Dialog, DialogContent, DialogDescription, DialogHeader, DialogTitle } from "@/components/ui/dialog";
import { Field } from "@/components/ui/field";
import { Input } from "@/components/ui/input";
import { ApiError } from "@/lib/api/errors";
import { useSession } from "@/lib/auth/store";
import { signIn } from "@/lib/session-actions";

/**
 * The session ended (the refresh token expired or was revoked) while a page was open: sign in again over
 * the page, and the requests that were waiting go on. Nothing typed into the page is lost.
 */
export function SessionExpiredDialog() {
  const status = useSession((s) => s.status);
  const username = useSession((s) => s.user?.username ?? "");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const open = status === "expired";

  return (
    <Dialog open={open}>
      <DialogContent
        onEscapeKeyDown={(event) => event.preventDefault()}
        onPointerDownOutside={(event) => event.preventDefault()}
        onInteractOutside={(event) => event.preventDefault()}
      >
        <DialogHeader>
          <DialogTitle>Your session has ended</DialogTitle>
          <DialogDescription>Sign in again to carry on. This page, and anything you typed into it, stays as it is.</DialogDescription>
        </DialogHeader>
        <form
          className="grid grid-cols-1 gap-4"
          onSubmit={async (event) => {
            event.preventDefault();
            setBusy(true);
            setError(null);
            try {
              await signIn(username, password);
              setPassword("");
            } catch (caught) {
              setError(caught instanceof ApiError ? caught.message : "Signing in failed.");
            } finally {
              setBusy(false);
            }
          }}
        >
          <Field id="reauth-username" label="Username">
            <Input value={username} readOnly autoComplete="username" />
          </Field>
          <Field id="reauth-password" label="Password" error={error}>
            <Input type="password" value={password} onChange={(e) => setPassword(e.target.value)} autoComplete="current-password" required autoFocus />
          </Field>
          <div className="flex flex-col-reverse gap-2 sm:flex-row sm:justify-between">
            <a className="self-center text-sm text-primary underline-offset-4 hover:underline" href="/login">
              Sign in as someone else
            </a>
            <Button type="submit" disabled={busy || !password}>
              {busy ? "Signing in…" : "Sign in"}
            </Button>
          </div>
        </form>
      </DialogContent>
    </Dialog>
  );
}
