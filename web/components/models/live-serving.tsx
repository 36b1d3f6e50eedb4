"use client";

import { Activity } from "lucide-react";
import { useRouter } from "next/navigation";
import { useEffect, useRef, useState } from "react";

import { useTopic } from "@/components/realtime/use-topic";
import { Badge } from "@/components/ui/badge";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Time } from "@/components/ui/time";
import { EMPTY_LIVE, REFRESHING_TYPES, useModelLive } from "@/lib/stores/model-live";

/** model:<name>, live: promotions and rollbacks as they happen, and each serving process's hot swap. */
export function LiveServing({ model, production }: { model: string; production: number | null }) {
  const router = useRouter();
  const live = useModelLive((s) => s.models[model] ?? EMPTY_LIVE);
  const refresh = useRef<ReturnType<typeof setTimeout> | null>(null);
  const [listening, setListening] = useState(false);
  useEffect(() => () => {
    if (refresh.current) clearTimeout(refresh.current);
  }, []);
  useTopic(`model:${model}`, {
    onSubscribed: () => setListening(true),
    onEvent: (event) => {
      useModelLive.getState().apply(model, event);
      if (REFRESHING_TYPES.has(event.type)) {
        // Versions and history are server-rendered: fetch them again (once for a burst of events).
        if (refresh.current) clearTimeout(refresh.current);
        refresh.current = setTimeout(() => router.refresh(), 250);
      }
    },
    onReset: () => router.refresh(),
  });
  const swaps = Object.values(live.swaps).sort((a, b) => b.at - a.at);
  return (
    <Card aria-labelledby="live-title" data-live={listening ? "subscribed" : "connecting"}>
      <CardHeader>
        <div>
          <CardTitle id="live-title" className="flex items-center gap-2">
            <Activity className="size-4" aria-hidden /> Serving
          </CardTitle>
          <CardDescription>
            {production !== null ? `Calls without a version go to version ${production}.` : "No version is in production: calls must name a version."}
          </CardDescription>
        </div>
        {listening ? <Badge variant="success">live</Badge> : null}
      </CardHeader>
      <CardContent className="grid grid-cols-1 gap-3">
        {swaps.length ? (
          <ul className="grid gap-1" aria-label="Hot swaps">
            {swaps.map((swap) => (
              <li key={swap.process} className="flex flex-wrap items-center gap-2 text-sm">
                <Badge variant={swap.state === "done" ? "success" : swap.state === "failed" ? "destructive" : "warning"}>
                  {swap.state === "swapping" ? "swapping" : swap.state === "done" ? "swapped" : "swap failed"}
                </Badge>
                <span>
                  {swap.fromVersion ? `v${swap.fromVersion} → ` : ""}v{swap.version}
                  {swap.seconds !== undefined ? ` in ${swap.seconds.toFixed(2)} s` : ""}
                </span>
                <span className="font-mono text-xs text-muted-foreground">{swap.process}</span>
                {swap.error ? <span className="text-xs text-destructive">{swap.error}</span> : null}
              </li>
            ))}
          </ul>
        ) : null}
        <div aria-live="polite">
          {live.log.length ? (
            <ol className="grid gap-1 text-sm" aria-label="Recent events">
              {live.log.slice(0, 6).map((entry) => (
                <li key={`${entry.seq}-${entry.type}`} className="flex flex-wrap gap-x-2">
                  <span className="text-xs text-muted-foreground">
                    <Time iso={new Date(entry.at).toISOString()} />
                  </span>
                  <span>{entry.text}</span>
                </li>
              ))}
            </ol>
          ) : (
            <p className="text-sm text-muted-foreground">Promotions, rollbacks and hot swaps appear here as they happen.</p>
          )}
        </div>
      </CardContent>
    </Card>
  );
}
