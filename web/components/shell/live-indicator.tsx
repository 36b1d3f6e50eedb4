"use client";

import { useConnection } from "@/lib/realtime/live";
import { cn } from "@/lib/utils";

const TEXT = { idle: "Live updates idle", connecting: "Connecting…", open: "Live", reconnecting: "Reconnecting…", stopped: "Live updates off" };

export function LiveIndicator() {
  const status = useConnection((s) => s.status);
  if (status === "idle") return null;
  return (
    <span className="hidden items-center gap-1.5 text-xs text-muted-foreground sm:inline-flex" role="status" aria-live="polite">
      <span
        aria-hidden
        className={cn("size-2 rounded-full", status === "open" ? "bg-success" : status === "stopped" ? "bg-destructive" : "animate-pulse bg-warning")}
      />
      {TEXT[status]}
    </span>
  );
}
