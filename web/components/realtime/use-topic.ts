"use client";

import { useEffect, useRef } from "react";

import type { TopicListener } from "@/lib/realtime/client";
import { realtime } from "@/lib/realtime/live";

/** Listens to a topic of /ws/v1/events while the component is mounted (one socket per tab, shared). */
export function useTopic(topic: string | null, listener: TopicListener, since: number | null = null): void {
  const ref = useRef(listener);
  useEffect(() => {
    ref.current = listener;
  });
  useEffect(() => {
    if (!topic) return;
    return realtime().subscribe(
      topic,
      {
        onSubscribed: () => ref.current.onSubscribed?.(),
        onEvent: (event) => ref.current.onEvent?.(event),
        onReset: (reset) => ref.current.onReset?.(reset),
        onError: (error) => ref.current.onError?.(error),
      },
      { since },
    );
  }, [topic, since]);
}
