import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// Browser tests: Chromium (Debian's, via playwright-core) against a real stack that
// tests/console/test_browser.py starts (uvicorn + the console server, PostgreSQL, Redis).
export default defineConfig({
  resolve: { alias: { "@": fileURLToPath(new URL(".", import.meta.url)) } },
  test: {
    environment: "node",
    include: ["tests/browser/**/*.test.ts"],
    fileParallelism: false,
    sequence: { concurrent: false },
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ["verbose"],
  },
});
