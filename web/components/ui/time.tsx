"use client";

import { useNow } from "@/lib/clock";
import { formatAbsolute, formatRelative } from "@/lib/format";

/** "3 minutes ago", with the absolute UTC time on hover; absolute while rendered on the server. */
export function Time({ iso }: { iso: string | null | undefined }) {
  const now = useNow();
  if (!iso) return <span className="text-muted-foreground">—</span>;
  const absolute = formatAbsolute(iso);
  return (
    <time dateTime={iso} title={absolute} className="whitespace-nowrap">
      {now === null ? absolute : formatRelative(iso, now)}
    </time>
  );
}
