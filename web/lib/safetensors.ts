// Reads a safetensors file's header in the browser (8-byte little-endian length, then that many bytes of
// UTF-8 JSON: name -> {dtype, shape, data_offsets}) without reading the tensors, and compares it with the
// tensors the chosen architecture must hold (GET /api/v1/architectures/{name}/state-dict), so a wrong file
// is caught before it is uploaded. The server checks again whatever the browser says.

/** The server refuses larger headers too (inference/formats.py). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const DTYPE_BYTES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
};

export interface TensorHeader {
  name: string;
  dtype: string;
  shape: number[];
  offsets: [number, number];
}

export type HeaderResult =
  | { ok: true; tensors: TensorHeader[]; metadata: Record<string, string> | null; headerBytes: number }
  | { ok: false; error: string };

function fail(error: string): HeaderResult {
  return { ok: false, error };
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

async function bytes(blob: Blob): Promise<Uint8Array> {
  return new Uint8Array(await blob.arrayBuffer());
}

export async function readSafetensorsHeader(file: Blob): Promise<HeaderResult> {
  if (file.size < 8) return fail(`the file is ${file.size} bytes: too short to be a safetensors file`);
  const prefix = await bytes(file.slice(0, 8));
  const length = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES)) {
    return fail(`the header claims ${length} bytes, more than the ${MAX_HEADER_BYTES / 1024 / 1024} MB a model header may have: not a safetensors file`);
  }
  const headerBytes = Number(length);
  if (headerBytes < 2) return fail("the header is empty: not a safetensors file");
  if (8 + headerBytes > file.size) {
    return fail(`the file is truncated: the header needs ${headerBytes} bytes but only ${file.size - 8} follow its length`);
  }
  const raw = await bytes(file.slice(8, 8 + headerBytes));
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch {
    return fail("the header is not UTF-8: not a safetensors file");
  }
  if (!text.startsWith("{")) return fail("the header is not a JSON object: not a safetensors file");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return fail("the header is not valid JSON: not a safetensors file (or a damaged one)");
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) return fail("the header is not a JSON object");

  const dataBytes = file.size - 8 - headerBytes;
  const tensors: TensorHeader[] = [];
  let metadata: Record<string, string> | null = null;
  for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (value && typeof value === "object") metadata = value as Record<string, string>;
      continue;
    }
    if (!value || typeof value !== "object") return fail(`tensor "${name}": its entry is not an object`);
    const entry = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof entry.dtype !== "string") return fail(`tensor "${name}": no dtype`);
    if (!Array.isArray(entry.shape) || !entry.shape.every(isCount)) return fail(`tensor "${name}": its shape is not a list of sizes`);
    const offsets = entry.data_offsets;
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount) || offsets[1]! < offsets[0]!) {
      return fail(`tensor "${name}": bad data_offsets`);
    }
    const [start, end] = offsets as [number, number];
    if (end > dataBytes) return fail(`tensor "${name}": its data ends at byte ${end} but the file holds only ${dataBytes} bytes of data (truncated?)`);
    const size = DTYPE_BYTES[entry.dtype];
    if (size !== undefined) {
      const elements = (entry.shape as number[]).reduce((a, b) => a * b, 1);
      if (elements * size !== end - start) {
        return fail(`tensor "${name}": ${entry.dtype} ${JSON.stringify(entry.shape)} needs ${elements * size} bytes, its offsets give ${end - start}`);
      }
    }
    tensors.push({ name, dtype: entry.dtype, shape: entry.shape as number[], offsets: [start, end] });
  }
  tensors.sort((a, b) => a.name.localeCompare(b.name));
  return { ok: true, tensors, metadata, headerBytes };
}

export interface ExpectedTensor {
  name: string;
  dtype: string;
  shape: number[];
}

export interface TensorMismatch {
  name: string;
  expected: string;
  actual: string;
}

export interface Comparison {
  ok: boolean;
  missing: string[];
  unexpected: string[];
  shape: TensorMismatch[];
  dtype: TensorMismatch[];
}

export function compareTensors(actual: TensorHeader[], expected: ExpectedTensor[]): Comparison {
  const got = new Map(actual.map((t) => [t.name, t]));
  const want = new Map(expected.map((t) => [t.name, t]));
  const missing = [...want.keys()].filter((name) => !got.has(name)).sort();
  const unexpected = [...got.keys()].filter((name) => !want.has(name)).sort();
  const shape: TensorMismatch[] = [];
  const dtype: TensorMismatch[] = [];
  for (const [name, w] of [...want].sort(([a], [b]) => a.localeCompare(b))) {
    const g = got.get(name);
    if (!g) continue;
    if (JSON.stringify(g.shape) !== JSON.stringify(w.shape)) shape.push({ name, expected: JSON.stringify(w.shape), actual: JSON.stringify(g.shape) });
    if (g.dtype !== w.dtype) dtype.push({ name, expected: w.dtype, actual: g.dtype });
  }
  return { ok: !missing.length && !unexpected.length && !shape.length && !dtype.length, missing, unexpected, shape, dtype };
}

/** One line per problem, as the server words them. */
export function describeComparison(c: Comparison): string[] {
  return [
    ...c.missing.map((name) => `missing tensor "${name}"`),
    ...c.unexpected.map((name) => `unexpected tensor "${name}"`),
    ...c.shape.map((m) => `tensor "${m.name}" has shape ${m.actual}, expected ${m.expected}`),
    ...c.dtype.map((m) => `tensor "${m.name}" has dtype ${m.actual}, expected ${m.expected}`),
  ];
}
