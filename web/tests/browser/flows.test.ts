// Part 2 of the console in Chromium against a real stack with a Celery worker, started by
// tests/console/test_browser_flows.py: datasets, the train wizard, the live job page (its socket cut once
// mid-job), the playground with raw records, drift alerts live, the batching tuner under load, /system.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const BASE = required("TW_BASE_URL");
const [MAINTAINER, MAINTAINER_PASSWORD] = required("TW_MAINTAINER").split(":") as [string, string];
const [ADMIN, ADMIN_PASSWORD] = required("TW_ADMIN").split(":") as [string, string];
const MODEL = required("TW_MODEL");
const CSV = required("TW_CSV");
const SHOTS = process.env.TW_SHOTS ?? "";
const CHROMIUM = process.env.TW_CHROMIUM ?? "/usr/bin/chromium";
const EPOCHS = 25;
// Training runs in the suite's Celery worker on a shared, often loaded machine.
const TRAINING_TIMEOUT_MS = 420_000;

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these through tests/console/test_browser_flows.py`);
  return value;
}

let browser: Browser;
let axeSource: string;
const pageErrors: string[] = [];
const cspViolations: string[] = [];

async function newPage(context: BrowserContext): Promise<Page> {
  const page = await context.newPage();
  page.on("console", (message) => {
    if (/Content[- ]Security[- ]Policy/i.test(message.text())) cspViolations.push(`${page.url()}: ${message.text()}`);
  });
  page.on("pageerror", (error) => pageErrors.push(`${page.url()}: ${error.message}`));
  return page;
}

async function signIn(page: Page, username: string, password: string): Promise<void> {
  await page.goto(`${BASE}/login`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL((url) => url.pathname !== "/login");
}

async function axe(page: Page, label: string): Promise<void> {
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const result = await (window as unknown as { axe: { run: (ctx: Document, opts: object) => Promise<{ violations: { id: string; impact: string; help: string; nodes: { target: string[] }[] }[] }> } }).axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}`);
  });
  expect(violations, `axe on ${label}`).toEqual([]);
}

/** axe clean in light and dark, nothing wider than 360 px; screenshots of each. */
async function checkScreen(page: Page, name: string): Promise<void> {
  await page.waitForLoadState("load");
  await axe(page, `${name} (light)`);
  await page.emulateMedia({ colorScheme: "dark", reducedMotion: "reduce" });
  await axe(page, `${name} (dark)`);
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}-dark.png`), fullPage: true });
  await page.emulateMedia({ colorScheme: "light" });
  const viewport = page.viewportSize()!;
  await page.setViewportSize({ width: 360, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow, `${name} is wider than 360 px`).toBeLessThanOrEqual(0);
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}-360.png`), fullPage: true });
  await page.setViewportSize(viewport);
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function token(page: Page, username: string, password: string): Promise<string> {
  const answer = await page.request.post(`${BASE}/api/v1/auth/token`, { data: { username, password } });
  expect(answer.status()).toBe(200);
  return ((await answer.json()) as { access: string }).access;
}

function record(i: number, shift = 0): Record<string, unknown> {
  const x1 = Math.sin(i * 12.9898) * 1.2 + shift;
  const x2 = Math.cos(i * 78.233) * 1.1;
  return { x1: Number(x1.toFixed(4)), x2: Number(x2.toFixed(4)), city: ["Oslo", "Bergen", "Paris"][i % 3], flag: i % 2 ? "yes" : "no" };
}

beforeAll(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
  axeSource = await readFile(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
});

afterAll(async () => {
  await browser?.close();
});

describe.sequential("datasets, training, serving and monitoring", () => {
  let context: BrowserContext;
  let page: Page;
  let datasetId = 0;
  let jobId = 0;

  beforeAll(async () => {
    context = await browser.newContext({ viewport: { width: 1280, height: 900 }, reducedMotion: "reduce" });
    // Every websocket the page opens, so the test can cut them.
    await context.addInitScript(() => {
      const Native = window.WebSocket;
      const sockets: WebSocket[] = [];
      (window as unknown as { __twSockets: WebSocket[] }).__twSockets = sockets;
      window.WebSocket = class extends Native {
        constructor(url: string | URL, protocols?: string | string[]) {
          super(url, protocols);
          sockets.push(this);
        }
      } as typeof WebSocket;
    });
    page = await newPage(context);
    await signIn(page, MAINTAINER, MAINTAINER_PASSWORD);
  });

  afterAll(async () => {
    await context?.close();
  });

  it("uploads a CSV with progress and shows its profile", async () => {
    await page.goto(`${BASE}/datasets`);
    const upload = page.getByRole("button", { name: "Upload" });
    await page.locator("#dataset-file").setInputFiles(CSV);
    await expect.poll(() => upload.isEnabled(), { timeout: 20_000 }).toBe(true);
    await upload.click();
    await page.waitForURL(/\/datasets\/\d+$/);
    datasetId = Number(new URL(page.url()).pathname.split("/").pop());
    await expect.poll(() => page.getByRole("region", { name: "Columns" }).innerText()).toContain("city");
    expect(await page.getByRole("region", { name: "Preview rows" }).innerText()).toContain("Oslo");
    await checkScreen(page, "dataset");
    await page.goto(`${BASE}/datasets`);
    await checkScreen(page, "datasets");
  });

  it("trains from the wizard: the API's field error shown on its field, then promote when done", async () => {
    await page.goto(`${BASE}/train?dataset=${datasetId}`);
    await page.getByRole("button", { name: "Next" }).click();
    await page.getByLabel("Target column").selectOption("label");
    await page.getByRole("button", { name: "Next" }).click();
    await expect(page.getByRole("radio", { name: /Classification/ }).isChecked()).resolves.toBe(true);
    await page.getByRole("button", { name: "Next" }).click();
    await page.getByLabel("Epochs").fill("0");
    await page.getByLabel("Hidden").fill("32, 32");
    await page.getByLabel("Patience").fill("1000");
    await page.getByRole("button", { name: "Next" }).click();
    await page.getByLabel("Model name").fill(MODEL);
    await checkScreen(page, "train");
    await page.getByRole("button", { name: "Start training" }).click();
    // The API refuses epochs=0: the wizard goes back to the step and shows the message on the field.
    await expect.poll(() => page.locator("#hp-epochs-error").innerText({ timeout: 500 }).catch(() => "")).toMatch(/greater than or equal to 1/);
    await page.getByLabel("Epochs").fill(String(EPOCHS));
    await page.getByRole("button", { name: "Next" }).click();
    await page.getByRole("button", { name: "Start training" }).click();
    await page.waitForURL(/\/jobs\/\d+$/);
    jobId = Number(new URL(page.url()).pathname.split("/").pop());
  });

  it("draws the curves as epochs arrive, each epoch exactly once though the socket is cut", async () => {
    const curves = page.getByTestId("curves");
    await expect.poll(() => page.locator("[data-live=subscribed]").count(), { timeout: 30_000 }).toBeGreaterThan(0);
    await expect.poll(async () => Number(await curves.getAttribute("data-epoch-count")), { timeout: 180_000 }).toBeGreaterThan(0);
    const before = Number(await curves.getAttribute("data-epoch-count"));
    const cut = await page.evaluate(() => {
      const sockets = (window as unknown as { __twSockets: WebSocket[] }).__twSockets.filter((s) => s.readyState === WebSocket.OPEN);
      for (const socket of sockets) socket.close(4000, "cut by the test");
      return sockets.length;
    });
    expect(cut).toBeGreaterThan(0);
    await expect.poll(() => page.getByTestId("job-state").innerText(), { timeout: TRAINING_TIMEOUT_MS - 60_000 }).toBe("succeeded");
    const job = (await (await page.request.get(`${BASE}/api/v1/jobs/${jobId}`, { headers: { authorization: `Bearer ${await token(page, MAINTAINER, MAINTAINER_PASSWORD)}` } })).json()) as { progress: { epoch: number }; result: { stage: string; version: number } };
    const last = job.progress.epoch;
    await expect.poll(async () => Number(await curves.getAttribute("data-epoch-last")), { timeout: 20_000 }).toBe(last);
    expect(await curves.getAttribute("data-epochs")).toBe(Array.from({ length: last }, (_, i) => i + 1).join(","));
    for (const chart of await curves.locator("[role=img]").all()) expect(await chart.getAttribute("data-points")).toBe(String(last));
    // The reconnection came after the cut (a second socket was opened).
    expect(await page.evaluate(() => (window as unknown as { __twSockets: WebSocket[] }).__twSockets.length)).toBeGreaterThan(cut);
    console.log(`epochs before the cut: ${before}, after: ${last}`);
    expect(job.result.stage).toBe("production");
    await expect.poll(() => page.getByTestId("produced-version").innerText()).toContain("(production)");
    await page.getByLabel(/Smoothing/).fill("0.6");
    await checkScreen(page, "job");
    await page.goto(`${BASE}/jobs`);
    await expect.poll(() => page.getByTestId(`job-row-${jobId}`).innerText()).toContain("succeeded");
    await checkScreen(page, "jobs");
   }, TRAINING_TIMEOUT_MS);

  it("calls the promoted model from the playground with raw records", async () => {
    await page.goto(`${BASE}/models/${MODEL}`);
    await expect.poll(() => page.locator("[data-testid=version-1]").innerText()).toContain("production");
    await page.goto(`${BASE}/models/${MODEL}/playground`);
    // Typed again until it holds: text typed before the page hydrates is merged with the form's own.
    const request = JSON.stringify({ inputs: [record(1), record(2)] });
    const editor = page.getByLabel("Request body (JSON)");
    await expect.poll(async () => {
      await editor.fill(request);
      return editor.inputValue();
    }, { timeout: 20_000, interval: 500 }).toBe(request);
    await page.getByRole("radio", { name: "REST" }).click();
    await page.getByRole("button", { name: /^Send over/ }).click();
    try {
      await expect.poll(() => page.getByTestId("call-result").innerText({ timeout: 500 }).catch(() => ""), { timeout: 60_000 }).toContain("HTTP 200");
    } catch (error) {
      if (SHOTS) await page.screenshot({ path: path.join(SHOTS, "playground-records-failed.png"), fullPage: true });
      console.log(`playground page:\n${await page.locator("main").innerText()}`);
      throw error;
    }
    const body = await page.getByTestId("response-body").innerText();
    expect(body).toContain('"label"');
    expect(body).toContain('"probabilities"');
    await checkScreen(page, "playground-records");
  });

  it("shows a drift alert live after shifted traffic", async () => {
    const access = await token(page, MAINTAINER, MAINTAINER_PASSWORD);
    const send = async (shift: number, from: number) => {
      for (let batch = 0; batch < 4; batch++) {
        const inputs = Array.from({ length: 100 }, (_, i) => record(from + batch * 100 + i, shift));
        const answer = await page.request.post(`${BASE}/api/v1/models/${MODEL}/predict`, { data: { inputs }, headers: { authorization: `Bearer ${access}` } });
        expect(answer.status()).toBe(200);
      }
    };
    await send(0, 0);
    await page.goto(`${BASE}/models/${MODEL}/monitoring`);
    await expect.poll(() => page.locator("[data-live=subscribed]").count(), { timeout: 30_000 }).toBeGreaterThan(0);
    await send(4, 1000);
    await page.getByRole("button", { name: "Check drift now" }).click();
    await expect.poll(() => page.getByTestId("live-drift-alerts").innerText({ timeout: 500 }).catch(() => ""), { timeout: 30_000 }).toContain("x1");
    await expect.poll(() => page.getByTestId("drift-status-1").innerText({ timeout: 500 }).catch(() => ""), { timeout: 20_000 }).toBe("drift");
    await checkScreen(page, "monitoring");
  });

  it("moves the tuner's batch size when max_batch_size changes under load", async () => {
    const access = await token(page, MAINTAINER, MAINTAINER_PASSWORD);
    await page.goto(`${BASE}/models/${MODEL}/serving`);
    await expect.poll(() => page.locator("[data-live=subscribed]").count(), { timeout: 30_000 }).toBeGreaterThan(0);
    let running = true;
    const sent = { n: 0 };
    const worker = async (w: number) => {
      let i = 0;
      while (running) {
        await page.request.post(`${BASE}/api/v1/models/${MODEL}/predict`, { data: { inputs: [record(w * 100_000 + i++)] }, headers: { authorization: `Bearer ${access}` } }).catch(() => undefined);
        sent.n += 1;
      }
    };
    const load = Array.from({ length: 16 }, (_, w) => worker(w));
    try {
      const batch = async () => Number((await page.getByTestId("fig-batch").innerText()).replace(/[^0-9.]/g, "")) || 0;
      await expect.poll(batch, { timeout: 30_000, interval: 500 }).toBeGreaterThan(1.5);
      const wide = await batch();
      await page.getByLabel("Max batch size").fill("1");
      await page.getByRole("button", { name: "Save settings" }).click();
      await expect.poll(batch, { timeout: 30_000, interval: 500 }).toBe(1);
      console.log(`tuner mean batch: ${wide} rows before, 1 after max_batch_size=1 (${sent.n} requests sent)`);
      expect(Number(await page.getByTestId("tuner-charts").getAttribute("data-points"))).toBeGreaterThan(3);
      await checkScreen(page, "serving");
    } finally {
      running = false;
      await Promise.all(load);
    }
  });

  it("shows no page error and no CSP violation", () => {
    expect(pageErrors).toEqual([]);
    expect(cspViolations).toEqual([]);
  });
});

describe.sequential("the system page, as an admin", () => {
  it("shows HTTP latency per route, websockets, pool and queues", async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, reducedMotion: "reduce" });
    try {
      const page = await newPage(context);
      await signIn(page, ADMIN, ADMIN_PASSWORD);
      await page.goto(`${BASE}/system`);
      await expect.poll(() => page.getByRole("region", { name: "Requests by route" }).innerText()).toContain("/api/v1/");
      await checkScreen(page, "system");
    } finally {
      await context.close();
    }
  });
});
