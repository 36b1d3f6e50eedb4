// The live job page under a fast job (bench/console.py --live): opens /jobs/<id> in Chromium, says
// "ready" on stdout once subscribed, then waits until the chart holds `epochs` epochs (published by the
// bench at its rate), sampling the tab's JS heap (after a forced GC) every 10 s. Prints one JSON object:
// event-to-paint percentiles (message arrival to the next frame, and publication to that frame), the heap
// samples, and whether every epoch is on the chart exactly once.
import { createInterface } from "node:readline";

import { chromium } from "playwright-core";

const base = process.env.TW_BASE_URL;
const [username, password] = (process.env.TW_USER ?? "").split(":");
const job = process.env.TW_JOB;
const epochs = Number(process.env.TW_EPOCHS ?? 0);
const timeoutMs = Number(process.env.TW_TIMEOUT_MS ?? 600_000);

const browser = await chromium.launch({ executablePath: process.env.TW_CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
await page.goto(`${base}/login`);
await page.getByLabel("Username").fill(username);
await page.getByLabel("Password").fill(password);
await page.getByRole("button", { name: "Sign in" }).click();
await page.waitForURL((url) => url.pathname !== "/login");
await page.addInitScript(() => {
  window.__twPaint = [];
});
await page.goto(`${base}/jobs/${job}`);
await page.locator("[data-live=subscribed]").first().waitFor({ timeout: 60_000 });
const cdp = await context.newCDPSession(page);
const heap = async () => {
  await cdp.send("HeapProfiler.collectGarbage");
  const { usedSize } = await cdp.send("Runtime.getHeapUsage");
  return usedSize;
};
const heapSamples = [{ s: 0, bytes: await heap() }];
const started = Date.now();
console.log("ready");
// The bench says "go" when it starts publishing.
await new Promise((resolve) => createInterface({ input: process.stdin }).once("line", resolve));
const publishStart = Date.now();
let last = 0;
let nextSample = 10_000;
while (Date.now() - publishStart < timeoutMs) {
  last = Number(await page.getByTestId("curves").getAttribute("data-epoch-last").catch(() => "0")) || 0;
  if (Date.now() - publishStart >= nextSample) {
    heapSamples.push({ s: Math.round((Date.now() - publishStart) / 1000), bytes: await heap() });
    nextSample += 10_000;
  }
  if (last >= epochs) break;
  await page.waitForTimeout(250);
}
heapSamples.push({ s: Math.round((Date.now() - publishStart) / 1000), bytes: await heap() });
const count = Number(await page.getByTestId("curves").getAttribute("data-epoch-count"));
const samples = await page.evaluate(() => window.__twPaint);
const pct = (values, q) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] * 10) / 10 : null;
};
const arrival = samples.map((s) => s[0]);
const publication = samples.map((s) => s[1]);
console.log(JSON.stringify({
  epochs,
  drawn: count,
  last,
  exactlyOnce: count === epochs && last === epochs,
  paints: samples.length,
  arrivalToPaintMs: { p50: pct(arrival, 0.5), p99: pct(arrival, 0.99), max: pct(arrival, 1) },
  publishToPaintMs: { p50: pct(publication, 0.5), p99: pct(publication, 0.99), max: pct(publication, 1) },
  heap: heapSamples,
  seconds: Math.round((Date.now() - started) / 1000),
}));
await browser.close();
