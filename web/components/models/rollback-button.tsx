"use client";

import { Undo2 } from "lucide-react";
import { useRouter } from "next/navigation";
import { useState } from "react";

import { Button } from "@/components/ui/button";
import { api, path } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import type { RollbackResult } from "@/lib/api/types";
import { toast } from "@/lib/stores/toast";

/** One click: production goes back to the previous production version (the server picks it; 409 when none). */
export function RollbackButton({ model, target, production }: { model: string; target: number | null; production: number | null }) {
  const router = useRouter();
  const [busy, setBusy] = useState(false);
  const label = target !== null ? `Roll back to v${target}` : "Roll back";
  return (
    <Button
      variant="outline"
      disabled={busy || target === null}
      title={target === null ? "There is no earlier production version to go back to" : `Production goes from ${production !== null ? `v${production}` : "nothing"} to v${target}`}
      onClick={async () => {
        setBusy(true);
        try {
          const result = await api<RollbackResult>(path("/api/v1/models/{name}/rollback", { name: model }), { method: "POST", json: {} });
          toast(`Rolled back to version ${result.version}`, {
            variant: "success",
            description: result.from_version !== null ? `Version ${result.from_version} is archived; serving processes switch on their next request.` : undefined,
          });
          router.refresh();
        } catch (caught) {
          const error = caught instanceof ApiError ? caught : ApiError.network(caught);
          toast("Rollback failed", { variant: "error", description: `${error.message}${error.requestId ? ` (request ${error.requestId})` : ""}` });
        } finally {
          setBusy(false);
        }
      }}
    >
      <Undo2 aria-hidden />
      {busy ? "Rolling back…" : label}
    </Button>
  );
}
