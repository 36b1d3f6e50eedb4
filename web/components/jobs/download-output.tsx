"use client";

import { Download } from "lucide-react";
import { useState } from "react";

import { Button } from "@/components/ui/button";
import { apiResponse } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import { toast } from "@/lib/stores/toast";

/** A batch prediction's CSV: fetched with the in-memory token (a plain link would carry none), then saved. */
export function DownloadOutput({ jobId, label = "Download predictions (CSV)" }: { jobId: number; label?: string }) {
  const [busy, setBusy] = useState(false);
  return (
    <Button
      variant="outline"
      size="sm"
      disabled={busy}
      data-testid="job-output"
      onClick={async () => {
        setBusy(true);
        try {
          const response = await apiResponse(`/api/v1/jobs/${jobId}/output`, { headers: { accept: "text/csv" } });
          if (!response.ok) throw await ApiError.fromResponse(response);
          const url = URL.createObjectURL(await response.blob());
          const link = document.createElement("a");
          link.href = url;
          link.download = `job-${jobId}-predictions.csv`;
          link.click();
          setTimeout(() => URL.revokeObjectURL(url), 10_000);
        } catch (error) {
          toast("Download failed", { description: error instanceof Error ? error.message : String(error), variant: "error" });
        } finally {
          setBusy(false);
        }
      }}
    >
      <Download aria-hidden /> {label}
    </Button>
  );
}
