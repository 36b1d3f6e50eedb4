// What model:<name> says about a model while its page is open: promotions, rollbacks, new versions and
// each serving process's hot swap.
import { create } from "zustand";

import type { BusEvent } from "@/lib/realtime/client";

export type SwapState = "swapping" | "done" | "failed";

export interface ProcessSwap {
  process: string;
  state: SwapState;
  version: number;
  fromVersion: string | null;
  seconds?: number;
  error?: string;
  at: number;
}

export interface LiveEntry {
  seq: number;
  type: string;
  text: string;
  at: number;
}

export interface ModelLive {
  swaps: Record<string, ProcessSwap>;
  log: LiveEntry[];
}

export const EMPTY_LIVE: ModelLive = { swaps: {}, log: [] };
const MAX_LOG = 20;

/** Types after which the page's server-rendered data (versions, history) is stale. */
export const REFRESHING_TYPES = new Set(["promoted", "rolled_back", "version_created"]);

export function describe(event: BusEvent): string {
  const d = event.data;
  switch (event.type) {
    case "promoted":
      return `version ${d.version} moved to ${d.stage}${d.actor ? ` by ${d.actor}` : ""}`;
    case "rolled_back":
      return `rolled back to version ${d.version}${d.from_version ? ` from version ${d.from_version}` : ""}${d.actor ? ` by ${d.actor}` : ""}`;
    case "version_created":
      return `version ${d.version} published`;
    case "serving.swap_started":
      return `a serving process is loading version ${d.version}`;
    case "serving.swap_done":
      return `a serving process now serves version ${d.version}`;
    case "serving.swap_failed":
      return `a serving process could not load version ${d.version}: ${d.error}`;
    case "drift":
      return `drift on version ${d.version}: ${Object.keys((d.features as object) ?? {}).join(", ")}`;
    default:
      return event.type;
  }
}

export function applyModelEvent(live: ModelLive, event: BusEvent): ModelLive {
  const d = event.data;
  let swaps = live.swaps;
  if (event.type.startsWith("serving.swap_") && typeof d.process === "string" && typeof d.version === "number") {
    const state: SwapState = event.type === "serving.swap_started" ? "swapping" : event.type === "serving.swap_done" ? "done" : "failed";
    swaps = {
      ...swaps,
      [d.process]: {
        process: d.process,
        state,
        version: d.version,
        fromVersion: d.from_version == null ? null : String(d.from_version),
        seconds: typeof d.seconds === "number" ? d.seconds : undefined,
        error: typeof d.error === "string" ? d.error : undefined,
        at: event.ts * 1000,
      },
    };
  }
  const log = [{ seq: event.seq, type: event.type, text: describe(event), at: event.ts * 1000 }, ...live.log].slice(0, MAX_LOG);
  return { swaps, log };
}

interface ModelLiveState {
  models: Record<string, ModelLive>;
  apply: (model: string, event: BusEvent) => void;
  reset: (model: string) => void;
}

export const useModelLive = create<ModelLiveState>()((set) => ({
  models: {},
  apply: (model, event) => set((state) => ({ models: { ...state.models, [model]: applyModelEvent(state.models[model] ?? EMPTY_LIVE, event) } })),
  reset: (model) => set((state) => ({ models: { ...state.models, [model]: EMPTY_LIVE } })),
}));
