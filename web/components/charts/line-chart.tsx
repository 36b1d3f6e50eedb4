"use client";

import "uplot/dist/uPlot.min.css";

import { useEffect, useRef } from "react";
import type uPlot from "uplot";

import { cn } from "@/lib/utils";

export const PALETTE = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777"];

export interface ChartSeries {
  label: string;
  color?: string;
  dash?: number[];
  /** A second y axis on the right (e.g. a metric beside losses). */
  right?: boolean;
}

/**
 * uPlot on a canvas. The instance is made once (uPlot is loaded on first use, so a page without a chart
 * does not carry it) and every new `version` hands it the same arrays with `setData`: no React render
 * per point, no copy of the data. Width follows the container.
 */
export function LineChart({ label, data, version, series, time = false, height = 220, className, yLabel, points = false }: {
  label: string;
  data: readonly (readonly (number | null)[])[];
  version: number;
  series: ChartSeries[];
  time?: boolean;
  height?: number;
  className?: string;
  yLabel?: string;
  /** Mark each point (for sparse series such as drift checks). */
  points?: boolean;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const latest = useRef(data);
  // Before the effect below: a chart made after new data arrived starts from that data.
  useEffect(() => {
    latest.current = data;
  });
  const spec = JSON.stringify({ series, time, height, yLabel, points });

  useEffect(() => {
    let cancelled = false;
    let observer: ResizeObserver | null = null;
    void import("uplot").then(({ default: UPlot }) => {
      const el = box.current;
      if (cancelled || !el) return;
      const text = getComputedStyle(el).color || "#888";
      const grid = "rgba(128,128,128,0.18)";
      const hasRight = series.some((s) => s.right);
      const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
      const options: uPlot.Options = {
        width: Math.max(el.clientWidth, 200),
        height,
        scales: {
          // One x value would give an empty range: pad it (a minute of time, or one epoch).
          x: { time, range: (_u, min, max) => (min === max ? [min - (time ? 60 : 1), max + (time ? 60 : 1)] : [min, max]) },
          y: { auto: true },
          ...(hasRight ? { r: { auto: true } } : {}),
        },
        legend: { show: true, live: false },
        cursor: { drag: { x: false, y: false } },
        series: [
          { label: time ? "time" : "epoch" },
          ...series.map((s, i) => ({
            label: s.label,
            stroke: s.color ?? PALETTE[i % PALETTE.length],
            width: 2,
            dash: s.dash,
            scale: s.right ? "r" : "y",
            spanGaps: false,
            points: { show: points, size: 6 },
          })),
        ],
        axes: [
          { ...axis },
          { ...axis, label: yLabel, size: 56 },
          ...(hasRight ? [{ ...axis, scale: "r", side: 1, grid: { show: false }, size: 56 }] : []),
        ],
      };
      plot.current = new UPlot(options, latest.current as uPlot.AlignedData, el);
      observer = new ResizeObserver(() => {
        if (plot.current && el.clientWidth > 0) plot.current.setSize({ width: el.clientWidth, height });
      });
      observer.observe(el);
    });
    return () => {
      cancelled = true;
      observer?.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
    // The spec string stands for the options: a new series list makes a new chart.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [spec]);

  useEffect(() => {
    plot.current?.setData(data as uPlot.AlignedData);
  }, [data, version]);

  const count = data[0]?.length ?? 0;
  return (
    // min-w-0 and overflow-hidden: the canvas has a fixed width until the observer shrinks it, and a grid
    // item's automatic minimum would otherwise hold its track (and the page) at that width.
    <figure className={cn("grid min-w-0 gap-1", className)}>
      <figcaption className="text-sm font-medium">{label}</figcaption>
      <div ref={box} role="img" aria-label={`${label}: ${count} points`} data-points={count} className="w-full min-w-0 overflow-hidden text-muted-foreground" style={{ minHeight: height + 32 }} />
    </figure>
  );
}
