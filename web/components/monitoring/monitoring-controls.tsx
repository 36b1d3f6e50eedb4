"use client";

import { useRouter } from "next/navigation";
import { useRef, useState } from "react";

import { useTopic } from "@/components/realtime/use-topic";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Field } from "@/components/ui/field";
import { Input } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import { api, path } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import { toast } from "@/lib/stores/toast";

interface LiveAlert {
  key: string;
  at: number;
  version: number;
  features: Record<string, number>;
}

/** Drift alerts on model:<name> as they are published; the page's figures are fetched again after one. */
export function LiveDriftAlerts({ model }: { model: string }) {
  const router = useRouter();
  const [alerts, setAlerts] = useState<LiveAlert[]>([]);
  const [listening, setListening] = useState(false);
  const refresh = useRef<ReturnType<typeof setTimeout> | null>(null);
  useTopic(`model:${model}`, {
    onSubscribed: () => setListening(true),
    onEvent: (event) => {
      if (event.type !== "drift") return;
      const data = event.data as { version?: number; features?: Record<string, number> };
      setAlerts((list) => [{ key: `${event.epoch}-${event.seq}`, at: event.ts * 1000, version: data.version ?? 0, features: data.features ?? {} }, ...list].slice(0, 20));
      toast(`Drift on ${model}`, { description: `Features past the threshold: ${Object.keys(data.features ?? {}).join(", ") || "–"}`, variant: "error" });
      if (refresh.current) clearTimeout(refresh.current);
      refresh.current = setTimeout(() => router.refresh(), 300);
    },
  });
  return (
    <Card aria-labelledby="alerts-title" data-live={listening ? "subscribed" : "connecting"}>
      <CardHeader>
        <div>
          <CardTitle id="alerts-title">Drift alerts</CardTitle>
          <CardDescription>Live: a check that finds drift announces it here the moment it is stored.</CardDescription>
        </div>
        {listening ? <Badge variant="info">live</Badge> : null}
      </CardHeader>
      <CardContent aria-live="polite">
        {alerts.length ? (
          <ul className="grid gap-2" data-testid="live-drift-alerts">
            {alerts.map((alert) => (
              <li key={alert.key} className="flex flex-wrap items-center gap-2 text-sm">
                <Badge variant="destructive">drift</Badge>
                <span>version {alert.version}</span>
                {Object.entries(alert.features).map(([feature, psi]) => (
                  <span key={feature} className="font-mono text-xs">{feature} PSI {psi.toFixed(3)}</span>
                ))}
                <span className="ml-auto text-xs text-muted-foreground">{new Date(alert.at).toLocaleTimeString()}</span>
              </li>
            ))}
          </ul>
        ) : (
          <p className="text-sm text-muted-foreground">No drift since this page opened.</p>
        )}
      </CardContent>
    </Card>
  );
}

export function CheckNowButton({ model }: { model: string }) {
  const router = useRouter();
  const [busy, setBusy] = useState(false);
  return (
    <Button
      onClick={async () => {
        setBusy(true);
        try {
          const answer = await api<{ reports: { status: string; version: number }[]; skipped: unknown[] }>(path("/api/v1/models/{name}/monitoring/check", { name: model }), { method: "POST" });
          const summary = answer.reports.map((r) => `v${r.version}: ${r.status}`).join(", ") || "no version with a training reference had traffic";
          toast("Drift checked", { description: summary, variant: "success" });
          router.refresh();
        } catch (error) {
          toast("Could not check drift", { description: error instanceof ApiError ? `${error.message} (request id ${error.requestId ?? "–"})` : String(error), variant: "error" });
        } finally {
          setBusy(false);
        }
      }}
      disabled={busy}
    >
      {busy ? "Checking…" : "Check drift now"}
    </Button>
  );
}

/** Sample rate and drift threshold; the API's field errors are shown on the fields. */
export function MonitoringConfigForm({ model, config, canManage }: {
  model: string;
  config: { sample_rate: number; drift_threshold: number };
  canManage: boolean;
}) {
  const router = useRouter();
  const [values, setValues] = useState({ sample_rate: String(config.sample_rate), drift_threshold: String(config.drift_threshold) });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const fields = error?.fieldErrors() ?? {};
  return (
    <Card aria-labelledby="config-title">
      <CardHeader>
        <div>
          <CardTitle id="config-title">Settings</CardTitle>
          <CardDescription>Which share of predictions is recorded, and the PSI past which a feature counts as drifted.</CardDescription>
        </div>
      </CardHeader>
      <CardContent>
        <form
          noValidate
          className="grid gap-4"
          onSubmit={async (event) => {
            event.preventDefault();
            setBusy(true);
            setError(null);
            const num = (raw: string) => (raw.trim() === "" ? null : Number.isFinite(Number(raw)) ? Number(raw) : raw);
            try {
              await api(path("/api/v1/models/{name}/monitoring/config", { name: model }), {
                method: "PATCH",
                json: { sample_rate: num(values.sample_rate), drift_threshold: num(values.drift_threshold) },
              });
              toast("Monitoring settings saved", { variant: "success" });
              router.refresh();
            } catch (caught) {
              setError(caught instanceof ApiError ? caught : ApiError.network(caught));
            } finally {
              setBusy(false);
            }
          }}
        >
          <fieldset disabled={!canManage || busy} className="grid gap-4 sm:grid-cols-2">
            <legend className="sr-only">Monitoring settings</legend>
            <Field id="mon-sample-rate" label="Sample rate" hint="0 to 1; empty: the deployment's default" error={fields.sample_rate}>
              <Input inputMode="decimal" value={values.sample_rate} onChange={(e) => setValues({ ...values, sample_rate: e.target.value })} />
            </Field>
            <Field id="mon-threshold" label="Drift threshold (PSI)" hint="Above 0; empty: the default" error={fields.drift_threshold}>
              <Input inputMode="decimal" value={values.drift_threshold} onChange={(e) => setValues({ ...values, drift_threshold: e.target.value })} />
            </Field>
          </fieldset>
          {error && !Object.keys(fields).length ? <ErrorState error={error} title="Not saved" /> : null}
          {canManage ? (
            <div><Button type="submit" disabled={busy}>{busy ? "Saving…" : "Save settings"}</Button></div>
          ) : (
            <p className="text-sm text-muted-foreground">Only the model&apos;s owner or an admin can change these.</p>
          )}
        </form>
      </CardContent>
    </Card>
  );
}
