"use client";

import { CheckCircle2, FileUp, XCircle } from "lucide-react";
import { useRouter } from "next/navigation";
import { useEffect, useMemo, useRef, useState } from "react";

import { ConfigForm, configToText, textToConfig, type ConfigText } from "@/components/publish/config-form";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Field } from "@/components/ui/field";
import { NativeSelect, Textarea } from "@/components/ui/input";
import { Progress } from "@/components/ui/progress";
import { ErrorState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { api, path } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import type { Architecture, ModelVersion, StateDict } from "@/lib/api/types";
import { upload, type UploadProgress } from "@/lib/api/upload";
import { formatBytes } from "@/lib/format";
import { compareTensors, describeComparison, readSafetensorsHeader, type HeaderResult } from "@/lib/safetensors";
import { toast } from "@/lib/stores/toast";
import { cn } from "@/lib/utils";

type Expected = { state: "loading" } | { state: "ok"; value: StateDict } | { state: "error"; error: ApiError };

export function PublishForm({ model, architectures, initialArchitecture, initialConfig }: {
  model: string;
  architectures: Architecture[];
  initialArchitecture: string;
  initialConfig: Record<string, unknown> | null;
}) {
  const router = useRouter();
  const [architecture, setArchitecture] = useState(initialArchitecture);
  const schema = useMemo(() => architectures.find((a) => a.name === architecture)?.config_schema ?? { properties: {} }, [architectures, architecture]);
  const [configText, setConfigText] = useState<ConfigText>(() => configToText(schema, initialConfig));
  const config = useMemo(() => textToConfig(schema, configText), [schema, configText]);
  const configKey = JSON.stringify([architecture, config]);
  const missing = (schema.required ?? []).filter((key) => !(key in config));
  const [expected, setExpected] = useState<Expected>({ state: "loading" });
  const [signature, setSignature] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [header, setHeader] = useState<HeaderResult | null>(null);
  const [dragging, setDragging] = useState(false);
  const [progress, setProgress] = useState<UploadProgress | null>(null);
  const [uploadError, setUploadError] = useState<ApiError | null>(null);
  const [busy, setBusy] = useState(false);
  const inputRef = useRef<HTMLInputElement>(null);

  // The tensors this architecture and config need, from the server (debounced while typing).
  useEffect(() => {
    if (!architecture || missing.length) return;
    const controller = new AbortController();
    const timer = setTimeout(async () => {
      setExpected({ state: "loading" });
      try {
        const [name, body] = JSON.parse(configKey) as [string, Record<string, unknown>];
        const value = await api<StateDict>(path("/api/v1/architectures/{name}/state-dict", { name }), { method: "POST", json: { config: body }, signal: controller.signal });
        setExpected({ state: "ok", value });
      } catch (caught) {
        if (caught instanceof DOMException && caught.name === "AbortError") return;
        setExpected({ state: "error", error: caught instanceof ApiError ? caught : ApiError.network(caught) });
      }
    }, 300);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [architecture, configKey, missing.length]);

  const comparison = header?.ok && !missing.length && expected.state === "ok" ? compareTensors(header.tensors, expected.value.tensors) : null;
  const problems = comparison ? describeComparison(comparison) : [];

  async function choose(chosen: File | null) {
    setFile(chosen);
    setHeader(null);
    setUploadError(null);
    setProgress(null);
    if (chosen) setHeader(await readSafetensorsHeader(chosen));
  }

  async function publish() {
    if (!file) return;
    setBusy(true);
    setUploadError(null);
    const manifest: Record<string, unknown> = { format: "safetensors", architecture, config };
    if (signature.trim()) {
      try {
        manifest.signature = JSON.parse(signature);
      } catch {
        setUploadError(new ApiError({ status: 422, code: "validation_error", message: "The custom signature is not valid JSON.", details: null, requestId: null }));
        setBusy(false);
        return;
      }
    }
    const form = new FormData();
    form.append("manifest", JSON.stringify(manifest));
    form.append("artifact", file, file.name);
    try {
      const version = await upload<ModelVersion>(path("/api/v1/models/{name}/versions", { name: model }), form, setProgress);
      toast(`Version ${version.version} published`, { variant: "success", description: `sha256 ${version.artifact_sha256.slice(0, 12)}…` });
      router.push(`/models/${encodeURIComponent(model)}`);
      router.refresh();
    } catch (caught) {
      setUploadError(caught instanceof ApiError ? caught : ApiError.network(caught));
      setProgress(null);
    } finally {
      setBusy(false);
    }
  }

  const percent = progress && progress.total ? (progress.loaded / progress.total) * 100 : 0;
  const serverProblems = uploadError ? problemsFromDetails(uploadError.details) : [];

  return (
    <div className="grid grid-cols-1 gap-6 lg:grid-cols-2">
      <Card aria-labelledby="arch-title">
        <CardHeader>
          <CardTitle id="arch-title">1. Architecture</CardTitle>
        </CardHeader>
        <CardContent className="grid grid-cols-1 gap-4">
          <Field id="architecture" label="Architecture" hint="The module the server builds and loads your weights into.">
            <NativeSelect
              value={architecture}
              onChange={(e) => {
                const next = e.target.value;
                setArchitecture(next);
                setConfigText(configToText(architectures.find((a) => a.name === next)?.config_schema ?? {}, null));
              }}
            >
              {architectures.map((a) => (
                <option key={a.name} value={a.name}>
                  {a.name}
                </option>
              ))}
            </NativeSelect>
          </Field>
          <ConfigForm schema={schema} text={configText} onChange={setConfigText} error={!missing.length && expected.state === "error" ? expected.error.message : null} />
          {missing.length ? <p className="text-sm text-muted-foreground">Fill in {missing.join(", ")} to see the tensors this config needs.</p> : null}
          <details className="text-sm">
            <summary className="cursor-pointer font-medium">Custom signature (optional)</summary>
            <div className="mt-2 grid gap-2">
              <p className="text-xs text-muted-foreground">
                Leave empty to use the architecture&apos;s default:{" "}
                <code className="font-mono break-all">{expected.state === "ok" && expected.value.signature ? JSON.stringify(expected.value.signature) : "none"}</code>
              </p>
              <Field id="signature" label="Signature JSON">
                <Textarea value={signature} onChange={(e) => setSignature(e.target.value)} rows={4} spellCheck={false} className="font-mono text-xs" />
              </Field>
            </div>
          </details>
        </CardContent>
      </Card>

      <Card aria-labelledby="file-title">
        <CardHeader>
          <CardTitle id="file-title">2. Weights</CardTitle>
        </CardHeader>
        <CardContent className="grid grid-cols-1 gap-4">
          <div
            onDragOver={(e) => {
              e.preventDefault();
              setDragging(true);
            }}
            onDragLeave={() => setDragging(false)}
            onDrop={(e) => {
              e.preventDefault();
              setDragging(false);
              void choose(e.dataTransfer.files[0] ?? null);
            }}
            className={cn("flex flex-col items-center gap-2 rounded-lg border-2 border-dashed p-6 text-center", dragging && "border-primary bg-primary/5")}
          >
            <FileUp className="size-6 text-muted-foreground" aria-hidden />
            <label htmlFor="artifact" className="cursor-pointer text-sm font-medium text-primary underline-offset-4 hover:underline">
              Choose a .safetensors file
            </label>
            <span className="text-xs text-muted-foreground">or drop it here</span>
            <input
              ref={inputRef}
              id="artifact"
              type="file"
              accept=".safetensors,application/octet-stream"
              className="sr-only"
              onChange={(e) => void choose(e.target.files?.[0] ?? null)}
            />
            {file ? (
              <p className="text-sm break-all" data-testid="chosen-file">
                {file.name} · {formatBytes(file.size)}
              </p>
            ) : null}
          </div>

          <div aria-live="polite" className="grid grid-cols-1 gap-3">
            {header && !header.ok ? <ErrorState error={{ status: 0, message: header.error, requestId: null }} title="This is not a usable safetensors file" /> : null}
            {header?.ok && missing.length ? <p className="text-sm text-muted-foreground">Fill in the architecture&apos;s required config to check the file.</p> : null}
            {header?.ok && !missing.length && expected.state === "loading" ? <p className="text-sm text-muted-foreground">Checking against the architecture…</p> : null}
            {comparison?.ok ? (
              <p className="flex items-center gap-2 text-sm font-medium text-success" data-testid="check-ok">
                <CheckCircle2 className="size-4" aria-hidden /> All {header?.ok ? header.tensors.length : 0} tensors match the architecture (names, shapes and dtypes).
              </p>
            ) : null}
            {comparison && !comparison.ok ? (
              <div role="alert" className="grid gap-1 rounded-md border border-destructive/40 bg-destructive/5 p-3" data-testid="check-failed">
                <p className="flex items-center gap-2 text-sm font-semibold text-destructive">
                  <XCircle className="size-4" aria-hidden /> The file does not match {architecture}
                </p>
                <ul className="list-disc pl-5 text-sm">
                  {problems.slice(0, 8).map((p) => (
                    <li key={p}>{p}</li>
                  ))}
                  {problems.length > 8 ? <li>and {problems.length - 8} more</li> : null}
                </ul>
              </div>
            ) : null}
          </div>

          {header?.ok && expected.state === "ok" ? (
            <details className="text-sm">
              <summary className="cursor-pointer font-medium">Tensors in the file ({header.tensors.length})</summary>
              <Table label="Tensors in the file">
                <TableHeader>
                  <TableRow>
                    <TableHead>Name</TableHead>
                    <TableHead>dtype</TableHead>
                    <TableHead>Shape</TableHead>
                  </TableRow>
                </TableHeader>
                <TableBody>
                  {header.tensors.map((t) => (
                    <TableRow key={t.name}>
                      <TableCell className="font-mono text-xs break-all">{t.name}</TableCell>
                      <TableCell className="text-xs">{t.dtype}</TableCell>
                      <TableCell className="font-mono text-xs">{JSON.stringify(t.shape)}</TableCell>
                    </TableRow>
                  ))}
                </TableBody>
              </Table>
            </details>
          ) : null}

          {progress ? <Progress value={percent} label="Upload progress" /> : null}
          {progress ? <p className="text-xs text-muted-foreground">{progress.total ? `${formatBytes(progress.loaded)} of ${formatBytes(progress.total)}` : "Uploading…"}</p> : null}

          {uploadError ? (
            <div data-testid="server-error">
              <ErrorState error={uploadError} title="The server refused the version" />
              {serverProblems.length ? (
                <ul className="mt-2 list-disc pl-5 text-sm">
                  {serverProblems.map((p) => (
                    <li key={p}>{p}</li>
                  ))}
                </ul>
              ) : null}
            </div>
          ) : null}

          <div className="flex flex-wrap gap-2">
            <Button disabled={!file || !comparison?.ok || busy} onClick={() => void publish()}>
              {busy ? "Uploading…" : "Publish version"}
            </Button>
            {file && header?.ok && comparison && !comparison.ok ? (
              <Button variant="outline" disabled={busy} onClick={() => void publish()}>
                Upload anyway (the server checks again)
              </Button>
            ) : null}
          </div>
        </CardContent>
      </Card>
    </div>
  );
}

/** The server's 422 details for a mismatched artifact, one line per tensor. */
function problemsFromDetails(details: unknown): string[] {
  if (!details || typeof details !== "object" || Array.isArray(details)) return [];
  const d = details as { missing?: string[]; unexpected?: string[]; shape_mismatch?: { key: string; expected: unknown; actual: unknown }[]; dtype_mismatch?: { key: string; expected: unknown; actual: unknown }[] };
  return [
    ...(d.missing ?? []).map((k) => `missing tensor "${k}"`),
    ...(d.unexpected ?? []).map((k) => `unexpected tensor "${k}"`),
    ...(d.shape_mismatch ?? []).map((m) => `tensor "${m.key}" has shape ${JSON.stringify(m.actual)}, expected ${JSON.stringify(m.expected)}`),
    ...(d.dtype_mismatch ?? []).map((m) => `tensor "${m.key}" has dtype ${String(m.actual)}, expected ${String(m.expected)}`),
  ];
}
