import { Badge } from "@/components/ui/badge";

const VARIANT = { admin: "destructive", maintainer: "info", member: "success", viewer: "muted" } as const;

export function RoleBadge({ role }: { role: string }) {
  const variant = VARIANT[role as keyof typeof VARIANT] ?? "muted";
  return (
    <Badge variant={variant} data-testid="role-badge">
      {role}
    </Badge>
  );
}
