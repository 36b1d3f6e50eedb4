"use client";

import { useState } from "react";

import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { CopyButton } from "@/components/ui/copy-button";
import { Segmented } from "@/components/ui/segmented";
import type { Signature } from "@/lib/api/types";
import { useOrigin } from "@/lib/clock";
import { restBody, v2Body, type InputValues, type Protocol } from "@/lib/playground/requests";
import { curlSnippet, pythonSnippet, restUrl, tritonSnippet, v2Url } from "@/lib/playground/snippets";

type Kind = "curl" | "python" | "triton";

export function Snippets({ model, version, protocol, signature, inputs, bodyText }: {
  model: string;
  version: number | null;
  protocol: Protocol;
  signature: Signature;
  inputs: InputValues;
  bodyText: string | null;
}) {
  const [kind, setKind] = useState<Kind>("curl");
  const origin = useOrigin();
  const http = protocol === "rest" ? "rest" : "v2";
  const target = { origin, model, version };
  const url = http === "rest" ? restUrl(target) : v2Url(target);
  let body: unknown = http === "rest" ? restBody(signature, inputs) : v2Body(signature, inputs);
  if (bodyText !== null && protocol !== "ws") {
    try {
      body = JSON.parse(bodyText);
    } catch {
      // Invalid JSON: the snippet keeps the form's body.
    }
  }
  const text = kind === "curl" ? curlSnippet(url, body) : kind === "python" ? pythonSnippet(url, body) : tritonSnippet(target, signature, inputs);
  const names = { curl: "curl", python: "Python", triton: "tritonclient" };
  return (
    <Card aria-labelledby="snippet-title">
      <CardHeader>
        <CardTitle id="snippet-title">Copy as code</CardTitle>
        <CopyButton value={text} label={`Copy as ${names[kind]}`} />
      </CardHeader>
      <CardContent className="grid grid-cols-1 gap-3">
        <Segmented
          label="Snippet language"
          value={kind}
          onValueChange={setKind}
          options={[
            { value: "curl", label: "curl" },
            { value: "python", label: "Python" },
            { value: "triton", label: "tritonclient" },
          ]}
        />
        <p className="text-xs text-muted-foreground">
          {protocol === "ws" && kind !== "triton" ? "Websockets have no one-line client; this is the same call over " + (http === "rest" ? "REST" : "V2") + ". " : ""}
          Set <code className="font-mono">TORCHWIRE_TOKEN</code> to an API key (from <a className="text-primary underline underline-offset-4" href="/keys">API keys</a>).
        </p>
        <pre className="max-h-80 overflow-auto rounded-md bg-muted p-3 font-mono text-xs" data-testid="snippet" tabIndex={0}>
          {text}
        </pre>
      </CardContent>
    </Card>
  );
}
