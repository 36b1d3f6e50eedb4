// The console in Chromium against a real stack: started by tests/console/test_browser.py, which passes
// the server's URL, two accounts, the model name and the safetensors files to publish.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const BASE = required("TW_BASE_URL");
const [MAINTAINER, MAINTAINER_PASSWORD] = required("TW_MAINTAINER").split(":") as [string, string];
const [MEMBER, MEMBER_PASSWORD] = required("TW_MEMBER").split(":") as [string, string];
const MODEL = required("TW_MODEL");
const FIXTURES = required("TW_FIXTURES");
const BAD_TENSOR = required("TW_BAD_TENSOR");
const SHOTS = process.env.TW_SHOTS ?? "";
const CHROMIUM = process.env.TW_CHROMIUM ?? "/usr/bin/chromium";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these through tests/console/test_browser.py`);
  return value;
}

let browser: Browser;
let axeSource: string;
const cspViolations: string[] = [];
const pageErrors: string[] = [];

async function newPage(context: BrowserContext): Promise<Page> {
  const page = await context.newPage();
  page.on("console", (message) => {
    if (/Content[- ]Security[- ]Policy/i.test(message.text())) cspViolations.push(`${page.url()}: ${message.text()}`);
  });
  page.on("pageerror", (error) => pageErrors.push(`${page.url()}: ${error.message}`));
  return page;
}

async function signIn(page: Page, username: string, password: string): Promise<void> {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL((url) => url.pathname !== "/login");
}

async function axe(page: Page, label: string): Promise<void> {
  // Evaluated over the devtools protocol, which the page's CSP does not govern.
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const result = await (window as unknown as { axe: { run: (ctx: Document, opts: object) => Promise<{ violations: { id: string; impact: string; help: string; nodes: { target: string[] }[] }[] }> } }).axe.run(document, {
      resultTypes: ["violations"],
    });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}`);
  });
  expect(violations, `axe on ${label}`).toEqual([]);
}

/** The quality bars every screen has to meet: axe clean in light and dark, nothing wider than 360 px. */
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

async function toast(page: Page, text: string | RegExp): Promise<void> {
  await expect.poll(() => page.getByRole("status").filter({ hasText: text }).count().catch(() => 0), { timeout: 15_000 }).toBeGreaterThan(0);
}

async function visible(page: Page, selector: Parameters<Page["locator"]>[0], timeout = 15_000): Promise<void> {
  await page.locator(selector).first().waitFor({ state: "visible", timeout });
}

async function publish(page: Page, file: string): Promise<void> {
  await page.goto(`${BASE}/models/${MODEL}/publish`);
  await page.getByLabel("Architecture", { exact: true }).selectOption("mlp");
  await page.getByLabel("in_features").fill("4");
  await page.getByLabel("hidden (optional)").fill("8");
  await page.getByLabel("out_features").fill("3");
  await page.locator("#artifact").setInputFiles(path.join(FIXTURES, file));
  await visible(page, "[data-testid=check-ok]");
  await page.getByRole("button", { name: "Publish version" }).click();
  await page.waitForURL(`${BASE}/models/${MODEL}`);
}

async function promote(page: Page, version: number, reason: string): Promise<void> {
  await page.getByRole("button", { name: `Promote version ${version}` }).click();
  const dialog = page.getByRole("alertdialog");
  await dialog.getByLabel("Stage").selectOption("production");
  await dialog.getByLabel("Reason").fill(reason);
  await dialog.getByRole("button", { name: "Promote to production" }).click();
  await toast(page, `Version ${version} is now in production`);
  await expect.poll(() => page.locator(`[data-testid=version-${version}]`).innerText()).toContain("production");
}

beforeAll(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
  axeSource = await readFile(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
});

afterAll(async () => {
  await browser?.close();
});

describe.sequential("the console, as a maintainer", () => {
  let context: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    context = await browser.newContext({ viewport: { width: 1280, height: 900 }, reducedMotion: "reduce" });
    page = await newPage(context);
  });

  afterAll(async () => {
    await context?.close();
  });

  it("sends a signed-out visit to /login and back to the page after signing in", async () => {
    const response = await page.goto(`${BASE}/models?q=nothing-matches`);
    expect(new URL(page.url()).pathname).toBe("/login");
    expect(new URL(page.url()).searchParams.get("next")).toBe("/models?q=nothing-matches");
    // The CSP carries a fresh nonce per page.
    expect(response?.headers()["content-security-policy"]).toMatch(/script-src 'self' 'nonce-[^']+' 'strict-dynamic'/);
    await checkScreen(page, "login");
    await page.getByLabel("Username").fill(MAINTAINER);
    await page.getByLabel("Password").fill("wrong password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await visible(page, "text=Wrong username or password");
    await signIn(page, MAINTAINER, MAINTAINER_PASSWORD);
    expect(page.url()).toBe(`${BASE}/models?q=nothing-matches`);
    expect(await page.getByLabel("Search models").inputValue()).toBe("nothing-matches");
    expect(await page.getByTestId("role-badge").innerText()).toBe("maintainer");
    // The refresh token is only in the httpOnly, SameSite=Strict cookie; nothing in storage.
    const cookie = (await context.cookies()).find((c) => c.name === "tw_session")!;
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: "Strict" });
    expect(await page.evaluate(() => Object.keys(window.localStorage).length + Object.keys(window.sessionStorage).length)).toBe(0);
  });

  it("shows the overview: readiness and live connection", async () => {
    await page.goto(`${BASE}/`);
    await visible(page, "text=Ready");
    await visible(page, "text=Live");
    await checkScreen(page, "overview");
  });

  it("is keyboard navigable: the skip link, then the main navigation", async () => {
    await page.goto(`${BASE}/`);
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Skip to content");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Tab");
    await page.keyboard.press("Tab");
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe("Models");
    await page.keyboard.press("Enter");
    await page.waitForURL(`${BASE}/models`);
  });

  it("creates a model", async () => {
    await page.goto(`${BASE}/models`);
    await page.getByRole("button", { name: "New model" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Name").fill("Bad Name!");
    await dialog.getByRole("button", { name: "Create model" }).click();
    // The API's field error, on the field.
    await visible(page, "#model-name-error");
    await dialog.getByLabel("Name").fill(MODEL);
    await dialog.getByLabel("Description").fill("made by the browser tests");
    await dialog.getByRole("button", { name: "Create model" }).click();
    await page.waitForURL(`${BASE}/models/${MODEL}`);
    await visible(page, "text=No versions yet");
    await checkScreen(page, "model-empty");
    await page.goto(`${BASE}/models`);
    await checkScreen(page, "models");
  });

  it("names a wrong tensor before uploading, shows the server's 422 inline, and publishes a good file", async () => {
    await page.goto(`${BASE}/models/${MODEL}/publish`);
    await page.getByLabel("Architecture", { exact: true }).selectOption("mlp");
    await page.getByLabel("in_features").fill("4");
    await page.getByLabel("hidden (optional)").fill("8");
    await page.getByLabel("out_features").fill("3");
    await page.locator("#artifact").setInputFiles(path.join(FIXTURES, "bad.safetensors"));
    await visible(page, "[data-testid=check-failed]");
    expect(await page.getByTestId("check-failed").innerText()).toContain(BAD_TENSOR);
    expect(await page.getByRole("button", { name: "Publish version" }).isDisabled()).toBe(true);
    await checkScreen(page, "publish-mismatch");
    await page.getByRole("button", { name: /Upload anyway/ }).click();
    await visible(page, "[data-testid=server-error]");
    const refusal = await page.getByTestId("server-error").innerText();
    expect(refusal).toContain("HTTP 422");
    expect(refusal).toContain(BAD_TENSOR);
    expect(refusal).toMatch(/request id \S+/);
    await page.locator("#artifact").setInputFiles(path.join(FIXTURES, "not-safetensors.bin"));
    await visible(page, "text=This is not a usable safetensors file");
    await publish(page, "good1.safetensors");
    await visible(page, "[data-testid=version-1]");
  });

  it("promotes with a confirmation, twice", async () => {
    await promote(page, 1, "first release");
    await publish(page, "good2.safetensors");
    await promote(page, 2, "better weights");
    expect(await page.locator("[data-testid=version-1]").innerText()).toContain("archived");
    await checkScreen(page, "model");
  });

  it("calls the model over REST, V2 and the websocket", async () => {
    await page.goto(`${BASE}/models/${MODEL}/playground`);
    for (const [i, value] of ["0.5", "1", "-1", "2"].entries()) await page.getByLabel(`input[${i}]`).fill(value);
    for (const protocol of ["REST", "V2 (KServe/Triton)", "WebSocket"]) {
      await page.getByRole("radio", { name: protocol }).click();
      const before = await page.getByTestId("prediction-id").innerText({ timeout: 200 }).catch(() => "");
      await page.getByRole("button", { name: /^Send over/ }).click();
      await expect.poll(() => page.getByTestId("prediction-id").innerText({ timeout: 200 }).catch(() => ""), { timeout: 20_000 }).not.toBe(before);
      const predictionId = await page.getByTestId("prediction-id").innerText();
      expect(predictionId).toMatch(/^[0-9a-f-]{36}$/);
      const body = await page.getByTestId("response-body").innerText();
      expect(body).toContain(protocol === "REST" ? '"outputs"' : '"output"');
      expect(await page.getByTestId("latency").innerText()).toMatch(/^\d+\.\d ms$/);
      const requestId = await page.getByTestId("request-id").innerText();
      if (protocol === "WebSocket") expect(requestId).toContain("websocket messages have none");
      else expect(requestId).toMatch(/^[A-Za-z0-9._:-]{8,}$/);
      expect(await page.getByTestId("call-result").innerText()).toContain(protocol === "WebSocket" ? "answered" : "HTTP 200");
    }
    await page.getByRole("radio", { name: "tritonclient" }).click();
    expect(await page.getByTestId("snippet").innerText()).toContain(`InferenceServerClient(url="${new URL(BASE).host}")`);
    await page.getByRole("radio", { name: "curl" }).click();
    const curl = await page.getByTestId("snippet").innerText();
    expect(curl).toContain(`${BASE}/v2/models/${MODEL}/infer`);
    expect(curl).toContain("$TORCHWIRE_TOKEN");
    await checkScreen(page, "playground");
  });

  it("rolls back in one click, shows the hot swap live, and keeps both in the history", async () => {
    await page.goto(`${BASE}/models/${MODEL}`);
    // Listening on model:<name> before acting, or the event could pass before the subscription.
    await visible(page, "[data-live=subscribed]");
    await page.getByRole("button", { name: "Roll back to v1" }).click();
    await toast(page, "Rolled back to version 1");
    await visible(page, "text=rolled back to version 1 from version 2");
    await expect.poll(() => page.locator("[data-testid=version-1]").innerText()).toContain("production");
    // The next unversioned call makes the serving process swap; the page hears of it on model:<name>.
    const status = await page.evaluate(async (name) => {
      const session = await (await fetch("/session/refresh", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })).json();
      const response = await fetch(`/api/v1/models/${name}/predict`, {
        method: "POST",
        headers: { authorization: `Bearer ${session.access}`, "content-type": "application/json" },
        body: JSON.stringify({ inputs: [[1, 2, 3, 4]] }),
      });
      return response.status;
    }, MODEL);
    expect(status).toBe(200);
    await visible(page, "text=a serving process now serves version 1", 20_000);
    await page.getByRole("tab", { name: "History" }).click();
    await page.waitForURL(`${BASE}/models/${MODEL}?tab=history`);
    const history = await page.getByRole("region", { name: "Promotion history" }).innerText();
    expect(history).toContain("first release");
    expect(history).toContain("better weights");
    expect(history).toContain("rollback from version 2");
    expect(history.match(/rollback/g)?.length).toBeGreaterThanOrEqual(2);
    await checkScreen(page, "model-history");
  });

  it("shows the API's field errors in place on the serving settings", async () => {
    await page.goto(`${BASE}/models/${MODEL}?tab=settings`);
    await page.getByLabel("Max batch size").fill("0");
    await page.getByRole("button", { name: "Save settings" }).click();
    await visible(page, "#serving-max_batch_size-error");
    expect(await page.locator("#serving-max_batch_size-error").innerText()).toMatch(/greater than or equal to 1|must be/);
    await page.getByLabel("Visibility", { exact: true }).selectOption("public");
    await page.getByRole("button", { name: "Save sharing" }).click();
    await toast(page, "Sharing saved");
    await checkScreen(page, "model-settings");
  });

  it("renews an ended session in a dialog without losing what was typed", async () => {
    await page.goto(`${BASE}/models/${MODEL}?tab=settings`);
    await page.getByLabel("Max batch size").fill("64");
    // The session ends: the refresh token is revoked and the cookie gone (as after a day, or a sign-out
    // elsewhere), and the access token in the page's memory is refused once.
    const logout = await page.request.post(`${BASE}/session/logout`, { headers: { Origin: BASE, "content-type": "application/json" }, data: "{}" });
    expect(logout.status()).toBe(204);
    let refused = false;
    await page.route("**/api/v1/models/*", async (route) => {
      if (!refused && route.request().method() === "PATCH") {
        refused = true;
        await route.fulfill({ status: 401, contentType: "application/json", body: '{"error":{"code":"unauthorized","message":"token expired","details":null}}' });
      } else {
        await route.continue();
      }
    });
    await page.getByRole("button", { name: "Save settings" }).click();
    const dialog = page.getByRole("dialog", { name: "Your session has ended" });
    await dialog.waitFor();
    await axe(page, "session expired dialog");
    await dialog.getByLabel("Password").fill(MAINTAINER_PASSWORD);
    await dialog.getByRole("button", { name: "Sign in" }).click();
    await toast(page, "Serving settings saved");
    await page.unroute("**/api/v1/models/*");
    expect(await page.getByLabel("Max batch size").inputValue()).toBe("64");
    await page.reload();
    expect(await page.getByLabel("Max batch size").inputValue()).toBe("64");
  });

  it("creates an API key shown once, lists it and revokes it", async () => {
    await page.goto(`${BASE}/keys`);
    await page.getByRole("button", { name: "New key" }).click();
    await page.getByRole("dialog").getByLabel("Name").fill("browser test");
    await page.getByRole("button", { name: "Create key" }).click();
    const key = await page.getByTestId("new-key").innerText();
    expect(key).toMatch(/^tw_[A-Za-z0-9]+_\S+$/);
    const prefix = key.split("_")[1]!;
    expect((await page.request.get(`${BASE}/api/v1/me`, { headers: { authorization: `Bearer ${key}` } })).status()).toBe(200);
    await page.getByRole("button", { name: "Done" }).click();
    await visible(page, `[data-testid=key-${prefix}]`);
    expect(await page.content()).not.toContain(key);
    await checkScreen(page, "keys");
    await page.getByRole("button", { name: `Revoke key ${prefix}` }).click();
    await page.getByRole("button", { name: "Revoke key", exact: true }).click();
    await toast(page, `Key ${prefix} revoked`);
    await page.locator(`[data-testid=key-${prefix}]`).waitFor({ state: "detached" });
    expect((await page.request.get(`${BASE}/api/v1/me`, { headers: { authorization: `Bearer ${key}` } })).status()).toBe(401);
  });

  it("refuses session requests from another origin", async () => {
    const forged = await page.request.post(`${BASE}/session/login`, {
      headers: { Origin: "https://evil.example", "content-type": "application/json" },
      data: JSON.stringify({ username: MAINTAINER, password: MAINTAINER_PASSWORD }),
    });
    expect(forged.status()).toBe(403);
    expect((await forged.json()).error.code).toBe("bad_origin");
    expect((await page.request.post(`${BASE}/session/logout`, { headers: { "content-type": "application/json" }, data: "{}" })).status()).toBe(403);
  });

  it("signs out: the refresh token is revoked and every page goes to /login", async () => {
    await page.goto(`${BASE}/`);
    await page.getByRole("button", { name: /^Account menu of/ }).click();
    await page.getByRole("menuitem", { name: "Sign out" }).click();
    await page.waitForURL(`${BASE}/login`);
    expect((await context.cookies()).find((c) => c.name === "tw_session")).toBeUndefined();
    await page.goto(`${BASE}/models/${MODEL}`);
    expect(new URL(page.url()).pathname).toBe("/login");
  });
});

describe.sequential("the console, as a member", () => {
  let context: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    context = await browser.newContext({ viewport: { width: 1280, height: 900 }, reducedMotion: "reduce" });
    page = await newPage(context);
  });

  afterAll(async () => {
    await context?.close();
  });

  it("sees no promote, rollback or publish control, and a forged promote still gets 403", async () => {
    await page.goto(`${BASE}/models/${MODEL}`);
    await signIn(page, MEMBER, MEMBER_PASSWORD);
    expect(page.url()).toBe(`${BASE}/models/${MODEL}`);
    expect(await page.getByTestId("role-badge").innerText()).toBe("member");
    await visible(page, "[data-testid=version-1]");
    expect(await page.getByRole("button", { name: /^Promote/ }).count()).toBe(0);
    expect(await page.getByRole("button", { name: /^Roll back/ }).count()).toBe(0);
    expect(await page.getByRole("link", { name: "Publish version" }).count()).toBe(0);
    await page.goto(`${BASE}/models/${MODEL}?tab=settings`);
    expect(await page.getByLabel("Max batch size").isDisabled()).toBe(true);
    await checkScreen(page, "model-as-member");
    const [status, body] = await page.evaluate(async (name) => {
      const session = await (await fetch("/session/refresh", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })).json();
      const response = await fetch(`/api/v1/models/${name}/versions/2/promote`, {
        method: "POST",
        headers: { authorization: `Bearer ${session.access}`, "content-type": "application/json" },
        body: JSON.stringify({ stage: "production" }),
      });
      return [response.status, await response.json()] as const;
    }, MODEL);
    expect(status).toBe(403);
    expect(body.error.code).toBe("forbidden");
    await page.goto(`${BASE}/models/${MODEL}/publish`);
    await visible(page, "text=You cannot publish to this model");
  });

  it("left no page with a CSP violation or an uncaught error", () => {
    expect(cspViolations).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
