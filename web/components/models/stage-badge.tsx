import { Badge } from "@/components/ui/badge";

const VARIANT = { production: "success", staging: "info", archived: "muted", none: "outline" } as const;

export function StageBadge({ stage, version }: { stage: string; version?: number }) {
  const variant = VARIANT[stage as keyof typeof VARIANT] ?? "outline";
  const text = stage === "none" ? "no stage" : stage;
  return (
    <Badge variant={variant}>
      {version !== undefined ? `v${version} · ` : ""}
      {text}
    </Badge>
  );
}

export function VisibilityBadge({ visibility }: { visibility: string }) {
  return <Badge variant="outline">{visibility}</Badge>;
}
