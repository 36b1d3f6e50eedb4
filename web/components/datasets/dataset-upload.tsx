"use client";

import { useRouter } from "next/navigation";
import { useEffect, useRef, useState } from "react";

import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader, CardTitle } from "@/components/ui/card";
import { Field } from "@/components/ui/field";
import { Input } from "@/components/ui/input";
import { Progress } from "@/components/ui/progress";
import { ErrorState } from "@/components/ui/states";
import { ApiError } from "@/lib/api/errors";
import type { Dataset } from "@/lib/api/types";
import { upload } from "@/lib/api/upload";
import { formatBytes } from "@/lib/format";
import { toast } from "@/lib/stores/toast";

/** A CSV upload with a progress bar (XHR: fetch reports no upload progress); the profile opens after. */
export function DatasetUpload() {
  const router = useRouter();
  const [file, setFile] = useState<File | null>(null);
  const [progress, setProgress] = useState<{ loaded: number; total: number } | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const abort = useRef<AbortController | null>(null);
  const input = useRef<HTMLInputElement>(null);
  // A file chosen before the page hydrated fired no React change event: pick it up now.
  useEffect(() => {
    const chosen = input.current?.files?.[0];
    if (chosen) setFile(chosen);
  }, []);
  const busy = progress !== null;
  return (
    <Card aria-labelledby="upload-title">
      <CardHeader>
        <div>
          <CardTitle id="upload-title">Upload a CSV</CardTitle>
          <CardDescription>A header row, then one row per example. The server profiles every column.</CardDescription>
        </div>
      </CardHeader>
      <CardContent>
        <form
          className="grid gap-3"
          onSubmit={async (event) => {
            event.preventDefault();
            if (!file) return;
            setError(null);
            setProgress({ loaded: 0, total: file.size });
            abort.current = new AbortController();
            const form = new FormData();
            form.append("file", file, file.name);
            try {
              const dataset = await upload<Dataset>("/api/v1/datasets", form, setProgress, abort.current.signal);
              toast(`Uploaded ${dataset.name}`, { description: `${dataset.row_count} rows, ${dataset.columns.length} columns`, variant: "success" });
              router.push(`/datasets/${dataset.id}`);
            } catch (caught) {
              if (caught instanceof DOMException && caught.name === "AbortError") toast("Upload cancelled");
              else setError(caught instanceof ApiError ? caught : ApiError.network(caught));
            } finally {
              setProgress(null);
              abort.current = null;
            }
          }}
        >
          <Field id="dataset-file" label="CSV file" hint={file ? `${file.name}, ${formatBytes(file.size)}` : "Up to the server's upload limit (hundreds of MB)."}>
            <Input ref={input} type="file" accept=".csv,text/csv" disabled={busy} onChange={(e) => setFile(e.target.files?.[0] ?? null)} />
          </Field>
          {progress ? (
            <Progress value={progress.total ? (progress.loaded / progress.total) * 100 : 0} label={`Uploading: ${formatBytes(progress.loaded)} of ${formatBytes(progress.total)}`} />
          ) : null}
          {error ? <ErrorState error={error} title="The upload was refused" /> : null}
          <div className="flex gap-2">
            <Button type="submit" disabled={!file || busy}>{busy ? "Uploading…" : "Upload"}</Button>
            {busy ? <Button variant="ghost" onClick={() => abort.current?.abort()}>Cancel</Button> : null}
          </div>
        </form>
      </CardContent>
    </Card>
  );
}
