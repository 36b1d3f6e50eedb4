"use client";

import { Button } from "@/components/ui/button";
import { ErrorState } from "@/components/ui/states";

/** What error.tsx shows: an unexpected failure while rendering (API errors are shown in place by the pages). */
export function RouteError({ error, retry }: { error: unknown; retry: () => void }) {
  const digest = error instanceof Error && "digest" in error ? String((error as { digest?: unknown }).digest ?? "") : "";
  const message = error instanceof Error && !digest ? error.message : "The page failed to render. The server's log has the details.";
  return (
    <ErrorState
      error={{ message, requestId: digest ? `digest ${digest}` : null, status: 500 }}
      title="This page could not be shown"
      action={
        <Button variant="outline" size="sm" onClick={() => retry()}>
          Try again
        </Button>
      }
    />
  );
}
