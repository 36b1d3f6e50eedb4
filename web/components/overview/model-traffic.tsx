"use client";

import Link from "next/link";
import { useEffect, useState } from "react";

import { StageBadge } from "@/components/models/stage-badge";
import { EmptyState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { api } from "@/lib/api/client";
import type { Model, Traffic } from "@/lib/api/types";
import { formatRate } from "@/lib/format";

const POLL_MS = 5000;

/** Models with their production version and request rate, the rate polled while the tab is visible. */
export function ModelTraffic({ models, initial }: { models: Model[]; initial: Traffic[] }) {
  const [traffic, setTraffic] = useState(initial);
  useEffect(() => {
    let stopped = false;
    const tick = async () => {
      if (document.visibilityState !== "visible") return;
      try {
        const rows = await api<Traffic[]>("/api/v1/monitoring/traffic");
        if (!stopped) setTraffic(rows);
      } catch {
        // Keep the last figures; the next tick tries again.
      }
    };
    const timer = setInterval(tick, POLL_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, []);
  const rate = new Map(traffic.map((t) => [t.model, t]));
  if (models.length === 0) {
    return (
      <EmptyState title="No models yet">
        <Link className="text-primary underline underline-offset-4" href="/models">
          Create one
        </Link>{" "}
        or train one from a dataset.
      </EmptyState>
    );
  }
  return (
    <Table label="Models and their traffic">
      <TableHeader>
        <TableRow>
          <TableHead>Model</TableHead>
          <TableHead>Production</TableHead>
          <TableHead className="text-right">Requests</TableHead>
        </TableRow>
      </TableHeader>
      <TableBody>
        {models.map((model) => {
          const row = rate.get(model.name);
          return (
            <TableRow key={model.name}>
              <TableCell>
                <Link href={`/models/${encodeURIComponent(model.name)}`} className="font-medium text-primary underline-offset-4 hover:underline">
                  {model.name}
                </Link>
              </TableCell>
              <TableCell>{model.production_version !== null ? <StageBadge stage="production" version={model.production_version} /> : <span className="text-xs text-muted-foreground">none</span>}</TableCell>
              <TableCell className="text-right tabular-nums" data-testid={`rate-${model.name}`}>
                {formatRate(row?.rate_per_second ?? 0)}
                {row && row.errors > 0 ? <span className="ml-1 text-xs text-destructive">({row.errors} errors)</span> : null}
              </TableCell>
            </TableRow>
          );
        })}
      </TableBody>
    </Table>
  );
}
