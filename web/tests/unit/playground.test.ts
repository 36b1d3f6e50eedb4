import { describe, expect, it } from "vitest";

import type { Signature } from "@/lib/api/types";
import { defaultInputs, predictionIdOf, prettyJson, restBody, v2Body } from "@/lib/playground/requests";
import { curlSnippet, pythonSnippet, restUrl, tritonSnippet, v2Url } from "@/lib/playground/snippets";

const signature: Signature = {
  inputs: [{ name: "input", datatype: "FP32", shape: [-1, 4] }],
  outputs: [{ name: "output", datatype: "FP32", shape: [-1, 3] }],
};

describe("request bodies", () => {
  it("builds REST and V2 bodies from one set of inputs", () => {
    const inputs = { input: [[1, 2, 3, 4]] };
    expect(restBody(signature, inputs)).toEqual({ inputs: [[1, 2, 3, 4]] });
    expect(v2Body(signature, inputs, "x")).toEqual({ id: "x", inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }] });
    expect(defaultInputs(signature)).toEqual({ input: [[0, 0, 0, 0]] });
  });

  it("finds the prediction id in REST and V2 answers", () => {
    expect(predictionIdOf({ prediction_id: "a" })).toBe("a");
    expect(predictionIdOf({ parameters: { prediction_id: "b" } })).toBe("b");
    expect(predictionIdOf({ outputs: [] })).toBeNull();
  });

  it("prints rows on one line", () => {
    expect(prettyJson({ inputs: [[1, 2], [3, 4]] })).toBe('{\n  "inputs": [\n    [1,2],\n    [3,4]\n  ]\n}');
  });
});

describe("snippets", () => {
  const target = { origin: "https://tw.example:8443", model: "iris", version: 2 };

  it("use the real URL and never a token", () => {
    expect(restUrl(target)).toBe("https://tw.example:8443/api/v1/models/iris/predict?version=2");
    expect(v2Url({ ...target, version: null })).toBe("https://tw.example:8443/v2/models/iris/infer");
    const curl = curlSnippet(restUrl(target), { inputs: [[1, 2, 3, 4]] });
    expect(curl).toContain("'https://tw.example:8443/api/v1/models/iris/predict?version=2'");
    expect(curl).toContain('Authorization: Bearer $TORCHWIRE_TOKEN');
    expect(curl).toContain(`-d '{"inputs":[[1,2,3,4]]}'`);
  });

  it("quote single quotes for the shell", () => {
    expect(curlSnippet("http://h/x", { inputs: ["it's"] })).toContain(`-d '{"inputs":["it'"'"'s"]}'`);
  });

  it("write Python literals", () => {
    const py = pythonSnippet("http://h/x", { inputs: [true, null, "true"] });
    expect(py).toContain('"inputs": [');
    expect(py).toMatch(/True,\s+None,\s+"true"/);
  });

  it("write a tritonclient call with the host, TLS and version", () => {
    const text = tritonSnippet(target, signature, { input: [[1, 2, 3, 4]] });
    expect(text).toContain('InferenceServerClient(url="tw.example:8443", ssl=True)');
    expect(text).toContain('httpclient.InferInput("input", list(data.shape), "FP32")');
    expect(text).toContain('client.infer("iris", inputs, model_version="2", headers=headers)');
  });
});
