import { CheckCircle2, XCircle } from "lucide-react";

import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { ErrorState } from "@/components/ui/states";
import type { Readiness } from "@/lib/api/types";
import { publicGet } from "@/lib/server/api";

const CHECKS = [
  ["database", "Database"],
  ["redis", "Redis"],
  ["storage", "Storage"],
] as const;

export async function ReadinessCard() {
  const result = await publicGet<Readiness>("/readyz");
  return (
    <Card aria-labelledby="readiness-title">
      <CardHeader>
        <CardTitle id="readiness-title">Readiness</CardTitle>
        {result.ok ? (
          <span className={result.data.status === "ready" ? "text-sm font-medium text-success" : "text-sm font-medium text-destructive"}>
            {result.data.status === "ready" ? "Ready" : result.data.draining ? "Draining" : "Not ready"}
          </span>
        ) : null}
      </CardHeader>
      <CardContent>
        {result.ok ? (
          <ul className="grid gap-2 sm:grid-cols-3">
            {CHECKS.map(([key, label]) => {
              const value = result.data[key] ?? "unknown";
              const ok = value === "ok";
              return (
                <li key={key} className="flex min-w-0 items-start gap-2 rounded-md border p-2">
                  {ok ? <CheckCircle2 className="mt-0.5 size-4 shrink-0 text-success" aria-hidden /> : <XCircle className="mt-0.5 size-4 shrink-0 text-destructive" aria-hidden />}
                  <div className="min-w-0">
                    <div className="text-sm font-medium">{label}</div>
                    <div className={ok ? "text-xs text-muted-foreground" : "text-xs break-words text-destructive"}>{ok ? "answering" : value}</div>
                  </div>
                </li>
              );
            })}
          </ul>
        ) : (
          <ErrorState error={result.error} title="Readiness could not be read" />
        )}
      </CardContent>
    </Card>
  );
}
