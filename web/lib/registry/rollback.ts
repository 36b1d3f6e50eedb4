// Which version a rollback would restore, for the button's label: the same rule as the server's
// (app/registry/services.py `_rollback_target`), which decides. Promotions to production push onto the
// production lineage, rollbacks pop it; the target is the entry under the current production version.
import type { StageChange } from "@/lib/api/types";

export function rollbackTarget(history: StageChange[], production: number | null): number | null {
  const stack: number[] = [];
  const oldestFirst = [...history].sort((a, b) => a.id - b.id);
  for (const change of oldestFirst) {
    if (change.to_stage !== "production") continue;
    if (change.action === "rollback" && stack.length > 1 && stack[stack.length - 1] !== change.version) stack.pop();
    if (stack[stack.length - 1] !== change.version) stack.push(change.version);
  }
  if (production !== null) {
    while (stack.length && stack[stack.length - 1] === production) stack.pop();
  }
  return stack.length ? stack[stack.length - 1]! : null;
}
