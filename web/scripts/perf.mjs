// The console's performance on its production build, in Chromium: first-load JavaScript per route
// (every script a first visit loads, gzip-compressed) and largest contentful paint.
//
//   TW_BASE_URL=http://127.0.0.1:8000 TW_USER=admin:password TW_MODEL=iris node scripts/perf.mjs [runs]
//
// Each route is loaded in a fresh browser context with the cache off (a first visit), signed in with the
// session cookie of one sign-in. Prints JSON; bench/console.py runs it against `make run`'s stack.
import { gzipSync } from "node:zlib";

import { chromium } from "playwright-core";

const base = process.env.TW_BASE_URL;
const [username, password] = (process.env.TW_USER ?? "").split(":");
const model = process.env.TW_MODEL;
const runs = Number(process.argv[2] ?? 5);
if (!base || !username || !password || !model) {
  console.error("set TW_BASE_URL, TW_USER=user:password and TW_MODEL");
  process.exit(2);
}

const routes = [
  { route: "/login", path: "/login", signedIn: false },
  { route: "/", path: "/", signedIn: true },
  { route: "/models", path: "/models", signedIn: true },
  { route: "/models/[name]", path: `/models/${model}`, signedIn: true },
  { route: "/models/[name]/publish", path: `/models/${model}/publish`, signedIn: true },
  { route: "/models/[name]/playground", path: `/models/${model}/playground`, signedIn: true },
  { route: "/keys", path: "/keys", signedIn: true },
  { route: "/models/[name]/serving", path: `/models/${model}/serving`, signedIn: true },
  { route: "/models/[name]/monitoring", path: `/models/${model}/monitoring`, signedIn: true },
  { route: "/datasets", path: "/datasets", signedIn: true },
  ...(process.env.TW_DATASET ? [{ route: "/datasets/[id]", path: `/datasets/${process.env.TW_DATASET}`, signedIn: true }] : []),
  { route: "/train", path: "/train", signedIn: true },
  { route: "/jobs", path: "/jobs", signedIn: true },
  ...(process.env.TW_JOB ? [{ route: "/jobs/[id]", path: `/jobs/${process.env.TW_JOB}`, signedIn: true }] : []),
  { route: "/system", path: "/system", signedIn: true },
];

const browser = await chromium.launch({ executablePath: process.env.TW_CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });

async function signedInState() {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/login`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL((url) => url.pathname !== "/login");
  const state = await context.storageState();
  await context.close();
  return state;
}

const lcpObserver = () => {
  window.__lcp = { time: 0, element: "" };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const el = entry.element;
      window.__lcp = { time: entry.startTime, element: el ? `${el.tagName.toLowerCase()} "${(el.textContent ?? "").trim().slice(0, 40)}"` : "" };
    }
  }).observe({ type: "largest-contentful-paint", buffered: true });
};

async function measure(path, storageState) {
  const context = await browser.newContext({ storageState, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
  await page.addInitScript(lcpObserver);
  const scripts = new Map();
  page.on("response", async (response) => {
    if (response.request().resourceType() !== "script") return;
    try {
      const body = await response.body();
      scripts.set(response.url(), { raw: body.length, gzip: gzipSync(body).length });
    } catch {
      // A script that never finished does not count.
    }
  });
  await page.goto(base + path, { waitUntil: "load" });
  await page.waitForTimeout(1500);
  // LCP is final once the user interacts; a key press makes Chromium report it.
  await page.keyboard.press("Shift");
  const lcp = await page.evaluate(() => window.__lcp);
  const ttfb = await page.evaluate(() => performance.getEntriesByType("navigation")[0]?.responseStart ?? 0);
  const url = page.url();
  await context.close();
  const files = [...scripts.values()];
  return {
    url,
    lcpMs: Math.round(lcp.time),
    lcpElement: lcp.element,
    ttfbMs: Math.round(ttfb),
    scripts: files.length,
    jsBytes: files.reduce((a, f) => a + f.raw, 0),
    jsGzipBytes: files.reduce((a, f) => a + f.gzip, 0),
  };
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const state = await signedInState();
const results = [];
for (const { route, path, signedIn } of routes) {
  const samples = [];
  for (let i = 0; i < runs; i += 1) samples.push(await measure(path, signedIn ? state : undefined));
  const last = samples[samples.length - 1];
  if (new URL(last.url).pathname !== new URL(base + path).pathname) throw new Error(`${path} ended at ${last.url}`);
  results.push({
    route,
    path,
    firstLoadJsGzipBytes: last.jsGzipBytes,
    firstLoadJsBytes: last.jsBytes,
    scripts: last.scripts,
    lcpMsMedian: median(samples.map((s) => s.lcpMs)),
    lcpMsMax: Math.max(...samples.map((s) => s.lcpMs)),
    lcpMsSamples: samples.map((s) => s.lcpMs),
    ttfbMsMedian: median(samples.map((s) => s.ttfbMs)),
    lcpElement: last.lcpElement,
  });
}
await browser.close();
console.log(JSON.stringify({ base, runs, routes: results }, null, 2));
