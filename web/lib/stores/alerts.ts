// Drift alerts on the overview: the newest reports, plus those announced live on user:<name>.
import { create } from "zustand";

import type { DriftAlert } from "@/lib/api/types";
import type { BusEvent } from "@/lib/realtime/client";

export const MAX_ALERTS = 10;

export function alertFromEvent(event: BusEvent): DriftAlert | null {
  if (event.type !== "drift") return null;
  const d = event.data;
  if (typeof d.report_id !== "number" || typeof d.model !== "string") return null;
  const features = d.features && typeof d.features === "object" ? Object.keys(d.features as object) : [];
  return {
    id: d.report_id,
    model: d.model,
    version: typeof d.version === "number" ? d.version : 0,
    created_at: new Date(event.ts * 1000).toISOString(),
    drifted_features: features,
    threshold: typeof d.threshold === "number" ? d.threshold : 0,
    sample_count: typeof d.sample_count === "number" ? d.sample_count : 0,
  };
}

export function addAlert(alerts: DriftAlert[], alert: DriftAlert): DriftAlert[] {
  if (alerts.some((a) => a.id === alert.id)) return alerts;
  return [alert, ...alerts].slice(0, MAX_ALERTS);
}

interface AlertsState {
  alerts: DriftAlert[];
  fresh: number[];
  setAlerts: (alerts: DriftAlert[]) => void;
  apply: (event: BusEvent) => void;
}

export const useAlerts = create<AlertsState>()((set) => ({
  alerts: [],
  fresh: [],
  setAlerts: (alerts) => set({ alerts: alerts.slice(0, MAX_ALERTS), fresh: [] }),
  apply: (event) => set((state) => {
    const alert = alertFromEvent(event);
    if (!alert) return state;
    const alerts = addAlert(state.alerts, alert);
    return alerts === state.alerts ? state : { alerts, fresh: [...state.fresh, alert.id] };
  }),
}));
