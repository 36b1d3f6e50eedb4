import { describe, expect, it } from "vitest";

import { compareTensors, describeComparison, MAX_HEADER_BYTES, readSafetensorsHeader } from "@/lib/safetensors";

/** A safetensors file: 8-byte little-endian header length, the header, then the data. */
function file(header: unknown, dataBytes: number, options: { rawHeader?: Uint8Array<ArrayBuffer>; claimedLength?: bigint } = {}): Blob {
  const headerBytes = options.rawHeader ?? new TextEncoder().encode(JSON.stringify(header));
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, options.claimedLength ?? BigInt(headerBytes.length), true);
  return new Blob([prefix, headerBytes, new Uint8Array(dataBytes)]);
}

const MLP = {
  "layers.0.weight": { dtype: "F32", shape: [8, 4], data_offsets: [0, 128] },
  "layers.0.bias": { dtype: "F32", shape: [8], data_offsets: [128, 160] },
  __metadata__: { format: "pt" },
};

describe("readSafetensorsHeader", () => {
  it("reads names, dtypes and shapes without the tensors", async () => {
    const result = await readSafetensorsHeader(file(MLP, 160));
    expect(result).toMatchObject({ ok: true, metadata: { format: "pt" } });
    if (!result.ok) throw new Error(result.error);
    expect(result.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([
      ["layers.0.bias", "F32", [8]],
      ["layers.0.weight", "F32", [8, 4]],
    ]);
  });

  it("refuses a file shorter than the length prefix", async () => {
    expect(await readSafetensorsHeader(new Blob([new Uint8Array(5)]))).toEqual({ ok: false, error: expect.stringContaining("too short") });
  });

  it("refuses a header that claims more bytes than the file holds (truncated)", async () => {
    const result = await readSafetensorsHeader(file(MLP, 0, { claimedLength: 5000n }));
    expect(result).toEqual({ ok: false, error: expect.stringContaining("truncated") });
  });

  it("refuses tensors whose data lies past the end of the file", async () => {
    const result = await readSafetensorsHeader(file(MLP, 100));
    expect(result).toEqual({ ok: false, error: expect.stringMatching(/layers\.0\.(weight|bias).*truncated/) });
  });

  it("refuses a huge header length without reading it", async () => {
    const result = await readSafetensorsHeader(file(MLP, 0, { claimedLength: BigInt(MAX_HEADER_BYTES) + 1n }));
    expect(result).toEqual({ ok: false, error: expect.stringContaining("more than the 100 MB") });
    // 2**63: not a number JavaScript can even hold exactly.
    expect((await readSafetensorsHeader(file(MLP, 0, { claimedLength: 2n ** 63n }))).ok).toBe(false);
  });

  it("refuses a header that is not UTF-8", async () => {
    const raw = new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]);
    expect(await readSafetensorsHeader(file(null, 0, { rawHeader: raw }))).toEqual({ ok: false, error: expect.stringContaining("not UTF-8") });
  });

  it("refuses malformed JSON, and JSON that is not an object of tensors", async () => {
    const broken = new TextEncoder().encode('{"a": {"dtype": "F32",');
    expect(await readSafetensorsHeader(file(null, 0, { rawHeader: broken }))).toEqual({ ok: false, error: expect.stringContaining("not valid JSON") });
    expect((await readSafetensorsHeader(file([1, 2], 0))).ok).toBe(false);
    expect(await readSafetensorsHeader(file({ w: { dtype: "F32", shape: [2], data_offsets: [0, 8, 9] } }, 8))).toEqual({ ok: false, error: 'tensor "w": bad data_offsets' });
    expect(await readSafetensorsHeader(file({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, 4))).toEqual({ ok: false, error: 'tensor "w": its shape is not a list of sizes' });
    expect(await readSafetensorsHeader(file({ w: { shape: [1], data_offsets: [0, 4] } }, 4))).toEqual({ ok: false, error: 'tensor "w": no dtype' });
  });

  it("refuses offsets that do not fit the dtype and shape", async () => {
    const result = await readSafetensorsHeader(file({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, 8));
    expect(result).toEqual({ ok: false, error: expect.stringContaining("needs 12 bytes") });
  });

  it("refuses a pickle (a torch.save file) as not a safetensors file", async () => {
    const pickle = new Blob([new Uint8Array([0x80, 0x02, 0x63, 0x5f, 0x5f, 0x62, 0x75, 0x69, 0x6c, 0x74, 0x69, 0x6e])]);
    expect((await readSafetensorsHeader(pickle)).ok).toBe(false);
  });
});

describe("compareTensors", () => {
  const expected = [
    { name: "layers.0.weight", dtype: "F32", shape: [8, 4] },
    { name: "layers.0.bias", dtype: "F32", shape: [8] },
    { name: "layers.1.weight", dtype: "F32", shape: [3, 8] },
  ];

  it("accepts an exact match", () => {
    const actual = expected.map((t) => ({ ...t, offsets: [0, 0] as [number, number] }));
    expect(compareTensors(actual, expected).ok).toBe(true);
  });

  it("names every missing, unexpected, reshaped and retyped tensor", () => {
    const actual = [
      { name: "layers.0.weight", dtype: "F32", shape: [8, 5], offsets: [0, 0] as [number, number] },
      { name: "layers.0.bias", dtype: "F16", shape: [8], offsets: [0, 0] as [number, number] },
      { name: "extra", dtype: "F32", shape: [1], offsets: [0, 0] as [number, number] },
    ];
    const comparison = compareTensors(actual, expected);
    expect(comparison.ok).toBe(false);
    expect(describeComparison(comparison)).toEqual([
      'missing tensor "layers.1.weight"',
      'unexpected tensor "extra"',
      'tensor "layers.0.weight" has shape [8,5], expected [8,4]',
      'tensor "layers.0.bias" has dtype F16, expected F32',
    ]);
  });
});
