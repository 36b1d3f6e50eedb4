import { AlertTriangle, Inbox } from "lucide-react";
import * as React from "react";

import type { ApiErrorInfo } from "@/lib/api/errors";
import { cn } from "@/lib/utils";

/** The API's message and the request id to quote; never a blank page. */
export function ErrorState({ error, title = "Something went wrong", action, className }: {
  error: Pick<ApiErrorInfo, "message" | "requestId" | "status">;
  title?: string;
  action?: React.ReactNode;
  className?: string;
}) {
  return (
    <div role="alert" className={cn("flex flex-col items-start gap-2 rounded-lg border border-destructive/40 bg-destructive/5 p-4", className)}>
      <div className="flex items-center gap-2 font-semibold text-destructive">
        <AlertTriangle className="size-4" aria-hidden />
        {title}
      </div>
      <p className="text-sm break-words">{error.message}</p>
      <p className="text-xs text-muted-foreground">
        {error.status ? `HTTP ${error.status}` : "No answer"}
        {error.requestId ? (
          <>
            {" · request id "}
            <code className="font-mono select-all">{error.requestId}</code>
          </>
        ) : null}
      </p>
      {action}
    </div>
  );
}

export function EmptyState({ title, children, className }: { title: string; children?: React.ReactNode; className?: string }) {
  return (
    <div className={cn("flex flex-col items-center gap-2 rounded-lg border border-dashed p-6 text-center", className)}>
      <Inbox className="size-5 text-muted-foreground" aria-hidden />
      <p className="text-sm font-medium">{title}</p>
      {children ? <div className="text-sm text-muted-foreground">{children}</div> : null}
    </div>
  );
}
