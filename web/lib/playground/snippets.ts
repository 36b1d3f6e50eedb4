// "Copy as curl / Python / tritonclient" for the request the playground would send, with this server's
// real URL. The token is never put in a snippet: it reads $TORCHWIRE_TOKEN (an API key from /keys).
import type { Signature } from "@/lib/api/types";
import type { InputValues } from "@/lib/playground/requests";

export interface SnippetTarget {
  origin: string;
  model: string;
  version: number | null;
}

export function restUrl(t: SnippetTarget): string {
  return `${t.origin}/api/v1/models/${encodeURIComponent(t.model)}/predict${t.version !== null ? `?version=${t.version}` : ""}`;
}

export function v2Url(t: SnippetTarget): string {
  const base = `${t.origin}/v2/models/${encodeURIComponent(t.model)}`;
  return `${t.version !== null ? `${base}/versions/${t.version}` : base}/infer`;
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'"'"'`)}'`;
}

function pythonLiteral(value: unknown, indent = 0): string {
  const json = JSON.stringify(value, null, 4) ?? "None";
  const pad = " ".repeat(indent);
  // JSON and Python literals differ only in these three words (strings are JSON-escaped, which Python reads).
  return json
    .replace(/("(?:[^"\\]|\\.)*")|\btrue\b|\bfalse\b|\bnull\b/g, (match, str: string | undefined) =>
      str ? str : match === "true" ? "True" : match === "false" ? "False" : "None",
    )
    .split("\n")
    .join(`\n${pad}`);
}

export function curlSnippet(url: string, body: unknown): string {
  return [
    `curl -sS -X POST ${shellQuote(url)} \\`,
    `  -H "Authorization: Bearer $TORCHWIRE_TOKEN" \\`,
    `  -H 'Content-Type: application/json' \\`,
    `  -d ${shellQuote(JSON.stringify(body))}`,
  ].join("\n");
}

export function pythonSnippet(url: string, body: unknown): string {
  return [
    "import os",
    "",
    "import httpx",
    "",
    `body = ${pythonLiteral(body)}`,
    "response = httpx.post(",
    `    ${JSON.stringify(url)},`,
    '    headers={"Authorization": f"Bearer {os.environ[\'TORCHWIRE_TOKEN\']}"},',
    "    json=body,",
    ")",
    "response.raise_for_status()",
    'print(response.headers["X-Request-ID"], response.json())',
  ].join("\n");
}

const NUMPY: Record<string, string> = {
  FP64: "float64", FP32: "float32", FP16: "float16", INT64: "int64", INT32: "int32", INT16: "int16", INT8: "int8",
  UINT8: "uint8", BOOL: "bool_", BYTES: "object_",
};

export function tritonSnippet(t: SnippetTarget, signature: Signature, inputs: InputValues): string {
  const url = new URL(t.origin);
  const ssl = url.protocol === "https:";
  const lines = [
    "import os",
    "",
    "import numpy as np",
    "import tritonclient.http as httpclient",
    "",
    `client = httpclient.InferenceServerClient(url=${JSON.stringify(url.host)}${ssl ? ", ssl=True" : ""})`,
    'headers = {"Authorization": f"Bearer {os.environ[\'TORCHWIRE_TOKEN\']}"}',
    "inputs = []",
  ];
  for (const spec of signature.inputs) {
    const dtype = NUMPY[spec.datatype] ?? "float32";
    lines.push(
      `data = np.array(${pythonLiteral(inputs[spec.name] ?? [])}, dtype=np.${dtype})`,
      `tensor = httpclient.InferInput(${JSON.stringify(spec.name)}, list(data.shape), ${JSON.stringify(spec.datatype)})`,
      "tensor.set_data_from_numpy(data)",
      "inputs.append(tensor)",
    );
  }
  const version = t.version !== null ? `, model_version=${JSON.stringify(String(t.version))}` : "";
  lines.push(`result = client.infer(${JSON.stringify(t.model)}, inputs${version}, headers=headers)`);
  for (const out of signature.outputs) lines.push(`print(${JSON.stringify(out.name)}, result.as_numpy(${JSON.stringify(out.name)}))`);
  return lines.join("\n");
}
