import { defineConfig, globalIgnores } from "eslint/config";
import nextVitals from "eslint-config-next/core-web-vitals";
import nextTypescript from "eslint-config-next/typescript";

export default defineConfig([
  ...nextVitals,
  ...nextTypescript,
  {
    rules: {
      // Tokens and other secrets must never reach storage the page's scripts can read (docs/console.md).
      "no-restricted-globals": ["error", { name: "localStorage", message: "No tokens or state in localStorage." },
        { name: "sessionStorage", message: "No tokens or state in sessionStorage." }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  globalIgnores([".next/**", "out/**", "build/**", "next-env.d.ts", "node_modules/**", "lib/api/schema.d.ts"]),
]);
