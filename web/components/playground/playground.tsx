"use client";

import { Send } from "lucide-react";
import { useEffect, useMemo, useRef, useState } from "react";

import { InputForm } from "@/components/playground/input-form";
import { Snippets } from "@/components/playground/snippets";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { CopyButton } from "@/components/ui/copy-button";
import { Field } from "@/components/ui/field";
import { NativeSelect, Textarea } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import { Segmented } from "@/components/ui/segmented";
import { apiResponse } from "@/lib/api/client";
import { ApiError, parseErrorBody } from "@/lib/api/errors";
import type { Model, ModelVersion, Signature } from "@/lib/api/types";
import { defaultInputs, predictionIdOf, prettyJson, restBody, v2Body, type CallResult, type InputValues, type Protocol } from "@/lib/playground/requests";
import { InferSocket } from "@/lib/playground/ws-infer";

const PROTOCOLS: { value: Protocol; label: string }[] = [
  { value: "rest", label: "REST" },
  { value: "v2", label: "V2 (KServe/Triton)" },
  { value: "ws", label: "WebSocket" },
];

function requestBody(protocol: Protocol, model: string, version: number | null, signature: Signature, inputs: InputValues): unknown {
  if (protocol === "rest") return restBody(signature, inputs);
  if (protocol === "v2") return v2Body(signature, inputs);
  return { model, ...(version !== null ? { version } : {}), ...v2Body(signature, inputs) };
}

export function Playground({ model, versions }: { model: Model; versions: ModelVersion[] }) {
  const newest = useMemo(() => [...versions].sort((a, b) => b.version - a.version), [versions]);
  const [choice, setChoice] = useState<string>(model.production_version !== null ? "production" : String(newest[0]!.version));
  const version = choice === "production" ? null : Number(choice);
  const served = version ?? model.production_version ?? newest[0]!.version;
  const signature = (versions.find((v) => v.version === served)?.signature ?? { inputs: [], outputs: [] }) as unknown as Signature;
  const [protocol, setProtocol] = useState<Protocol>("rest");
  const [inputs, setInputs] = useState<InputValues>(() => defaultInputs(signature));
  const [editedText, setEditedText] = useState<string | null>(null);
  const [result, setResult] = useState<CallResult | null>(null);
  const [jsonError, setJsonError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const socket = useRef<InferSocket | null>(null);
  const edited = editedText !== null;
  const bodyText = editedText ?? prettyJson(requestBody(protocol, model.name, version, signature, inputs));

  useEffect(() => () => socket.current?.close(), []);

  function chooseVersion(next: string) {
    setChoice(next);
    const number = next === "production" ? model.production_version ?? newest[0]!.version : Number(next);
    const nextSignature = versions.find((v) => v.version === number)?.signature as unknown as Signature | undefined;
    if (nextSignature && JSON.stringify(nextSignature) !== JSON.stringify(signature)) {
      setInputs(defaultInputs(nextSignature));
      setEditedText(null);
    }
  }

  async function send() {
    let body: unknown;
    try {
      body = JSON.parse(bodyText);
      setJsonError(null);
    } catch (error) {
      setJsonError(`The request is not valid JSON: ${(error as Error).message}`);
      return;
    }
    setBusy(true);
    const started = performance.now();
    const name = encodeURIComponent(model.name);
    try {
      if (protocol === "ws") {
        socket.current ??= new InferSocket();
        const answer = await socket.current.request(body as Record<string, unknown>);
        const latencyMs = performance.now() - started;
        const failed = typeof answer.error === "string";
        setResult({
          protocol,
          ok: !failed,
          status: null,
          latencyMs,
          requestId: null,
          predictionId: predictionIdOf(answer),
          body: answer,
          error: failed ? `${answer.code ?? "error"}: ${answer.error}` : null,
        });
      } else {
        const url = protocol === "rest"
          ? `/api/v1/models/${name}/predict${version !== null ? `?version=${version}` : ""}`
          : `/v2/models/${name}${version !== null ? `/versions/${version}` : ""}/infer`;
        const response = await apiResponse(url, { method: "POST", json: body });
        const text = await response.text();
        const latencyMs = performance.now() - started;
        const requestId = response.headers.get("x-request-id");
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // Shown as text.
        }
        setResult({
          protocol,
          ok: response.ok,
          status: response.status,
          latencyMs,
          requestId,
          predictionId: response.ok ? predictionIdOf(parsed) : null,
          body: parsed,
          error: response.ok ? null : parseErrorBody(response.status, text, requestId).message,
        });
      }
    } catch (caught) {
      const error = caught instanceof ApiError ? caught : new Error(String((caught as Error)?.message ?? caught));
      setResult({ protocol, ok: false, status: caught instanceof ApiError ? caught.status : null, latencyMs: performance.now() - started, requestId: caught instanceof ApiError ? caught.requestId : null, predictionId: null, body: null, error: error.message });
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="grid grid-cols-1 gap-6 lg:grid-cols-2">
      <Card aria-labelledby="request-title">
        <CardHeader>
          <CardTitle id="request-title">Request</CardTitle>
        </CardHeader>
        <CardContent className="grid grid-cols-1 gap-4">
          <Field id="pg-version" label="Version">
            <NativeSelect value={choice} onChange={(e) => chooseVersion(e.target.value)}>
              {model.production_version !== null ? <option value="production">production (v{model.production_version})</option> : null}
              {newest.map((v) => (
                <option key={v.version} value={String(v.version)}>
                  v{v.version} ({v.stage === "none" ? "no stage" : v.stage})
                </option>
              ))}
            </NativeSelect>
          </Field>
          <Segmented label="Protocol" value={protocol} onValueChange={setProtocol} options={PROTOCOLS} />
          <InputForm signature={signature} inputs={inputs} onChange={(next) => { setInputs(next); setEditedText(null); }} />
          <Field
            id="pg-body"
            label="Request body (JSON)"
            hint={edited ? "Edited by hand: the form above no longer writes here." : "Written from the form; edit it to send anything you like."}
            error={jsonError}
          >
            <Textarea
              value={bodyText}
              onChange={(e) => setEditedText(e.target.value)}
              rows={10}
              spellCheck={false}
              className="font-mono text-xs"
            />
          </Field>
          <div className="flex flex-wrap gap-2">
            <Button onClick={() => void send()} disabled={busy}>
              <Send aria-hidden /> {busy ? "Sending…" : `Send over ${PROTOCOLS.find((p) => p.value === protocol)?.label.split(" ")[0]}`}
            </Button>
            {edited ? (
              <Button variant="ghost" onClick={() => setEditedText(null)}>
                Rewrite from the form
              </Button>
            ) : null}
          </div>
        </CardContent>
      </Card>

      <div className="grid grid-cols-1 content-start gap-6">
        <Card aria-labelledby="response-title">
          <CardHeader>
            <CardTitle id="response-title">Response</CardTitle>
          </CardHeader>
          <CardContent className="grid grid-cols-1 gap-3" aria-live="polite">
            {result ? (
              <>
                <dl className="grid grid-cols-[auto_1fr] items-center gap-x-3 gap-y-1 text-sm" data-testid="call-result">
                  <dt className="text-muted-foreground">Status</dt>
                  <dd>
                    <Badge variant={result.ok ? "success" : "destructive"}>{result.status !== null ? `HTTP ${result.status}` : result.ok ? "answered" : "error"}</Badge>{" "}
                    <span className="text-xs text-muted-foreground">over {PROTOCOLS.find((p) => p.value === result.protocol)?.label}</span>
                  </dd>
                  <dt className="text-muted-foreground">Latency</dt>
                  <dd className="tabular-nums" data-testid="latency">{result.latencyMs.toFixed(1)} ms</dd>
                  <dt className="text-muted-foreground">X-Request-ID</dt>
                  <dd className="flex min-w-0 items-center gap-2">
                    <code className="truncate font-mono text-xs" data-testid="request-id">{result.requestId ?? "— (websocket messages have none)"}</code>
                  </dd>
                  <dt className="text-muted-foreground">prediction_id</dt>
                  <dd className="flex min-w-0 items-center gap-2">
                    <code className="truncate font-mono text-xs" data-testid="prediction-id">{result.predictionId ?? "—"}</code>
                    {result.predictionId ? <CopyButton value={result.predictionId} label="Copy" className="h-7 px-2" aria-label="Copy the prediction id" /> : null}
                  </dd>
                </dl>
                {result.error ? <ErrorState error={{ message: result.error, requestId: result.requestId, status: result.status ?? 0 }} title="The call failed" /> : null}
                {result.body !== null ? (
                  <pre className="max-h-96 overflow-auto rounded-md bg-muted p-3 font-mono text-xs" data-testid="response-body" tabIndex={0}>
                    {typeof result.body === "string" ? result.body : prettyJson(result.body)}
                  </pre>
                ) : null}
              </>
            ) : (
              <p className="text-sm text-muted-foreground">Send a request to see the outputs, the latency, the request id and the prediction id.</p>
            )}
          </CardContent>
        </Card>
        <Snippets model={model.name} version={version} protocol={protocol} signature={signature} inputs={inputs} bodyText={edited ? bodyText : null} />
      </div>
    </div>
  );
}
