"use client";

import { useEffect, useState } from "react";

import { Button } from "@/components/ui/button";
import { Field } from "@/components/ui/field";
import { Input } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import { ApiError, type ApiErrorInfo } from "@/lib/api/errors";
import { signIn } from "@/lib/session-actions";

export function LoginForm({ next }: { next: string }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiErrorInfo | null>(null);
  const fields = error?.status === 422 && error instanceof ApiError ? error.fieldErrors() : {};

  useEffect(() => {
    // Arriving from another site, the browser holds back the SameSite=Strict cookie: ask once, same-origin.
    const controller = new AbortController();
    fetch("/session/refresh", { method: "POST", headers: { "content-type": "application/json" }, body: '{"probe":true}', signal: controller.signal })
      .then((response) => {
        if (response.status === 200) window.location.replace(next);
      })
      .catch(() => undefined);
    return () => controller.abort();
  }, [next]);

  return (
    <form
      className="grid grid-cols-1 gap-4"
      noValidate
      onSubmit={async (event) => {
        event.preventDefault();
        setBusy(true);
        setError(null);
        try {
          await signIn(username, password);
          // A full navigation: the server components render with the new cookie.
          window.location.assign(next);
        } catch (caught) {
          setError(caught instanceof ApiError ? caught : { status: 0, code: "error", message: "Signing in failed.", details: null, requestId: null });
          setBusy(false);
        }
      }}
    >
      <Field id="username" label="Username" error={fields.username}>
        <Input value={username} onChange={(e) => setUsername(e.target.value)} autoComplete="username" autoCapitalize="none" spellCheck={false} required autoFocus />
      </Field>
      <Field id="password" label="Password" error={fields.password}>
        <Input type="password" value={password} onChange={(e) => setPassword(e.target.value)} autoComplete="current-password" required />
      </Field>
      {error && error.status !== 422 ? <ErrorState error={error} title={error.status === 401 ? "Wrong username or password" : "Could not sign in"} /> : null}
      <Button type="submit" disabled={busy}>
        {busy ? "Signing in…" : "Sign in"}
      </Button>
    </form>
  );
}
