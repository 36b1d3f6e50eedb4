"use client";

import Link from "next/link";
import { useEffect } from "react";

import { useTopic } from "@/components/realtime/use-topic";
import { Badge } from "@/components/ui/badge";
import { EmptyState } from "@/components/ui/states";
import { Time } from "@/components/ui/time";
import type { DriftAlert } from "@/lib/api/types";
import { useAlerts } from "@/lib/stores/alerts";

export function DriftAlerts({ username, initial }: { username: string; initial: DriftAlert[] }) {
  const alerts = useAlerts((s) => s.alerts);
  const fresh = useAlerts((s) => s.fresh);
  useEffect(() => {
    useAlerts.getState().setAlerts(initial);
  }, [initial]);
  useTopic(`user:${username}`, { onEvent: (event) => useAlerts.getState().apply(event) });
  if (alerts.length === 0) return <EmptyState title="No drift alerts">When a model&apos;s inputs drift past its threshold, it shows here as it happens.</EmptyState>;
  return (
    <ul className="divide-y" aria-live="polite" aria-label="Drift alerts">
      {alerts.map((alert) => (
        <li key={alert.id} className="flex flex-wrap items-center gap-x-3 gap-y-1 py-2">
          <Link href={`/models/${encodeURIComponent(alert.model)}`} className="font-medium text-primary underline-offset-4 hover:underline">
            {alert.model}
          </Link>
          <span className="text-xs text-muted-foreground">v{alert.version}</span>
          <span className="min-w-0 text-sm break-words">{alert.drifted_features.join(", ") || "drift"}</span>
          {fresh.includes(alert.id) ? <Badge variant="warning">new</Badge> : null}
          <span className="ml-auto text-xs text-muted-foreground">
            <Time iso={alert.created_at} />
          </span>
        </li>
      ))}
    </ul>
  );
}
