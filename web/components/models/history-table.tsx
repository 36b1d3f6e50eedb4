import { ArrowRight } from "lucide-react";

import { StageBadge } from "@/components/models/stage-badge";
import { Badge } from "@/components/ui/badge";
import { EmptyState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { Time } from "@/components/ui/time";
import type { StageChange } from "@/lib/api/types";

const ACTION = { promote: "promotion", replaced: "replaced", rollback: "rollback", backfill: "recorded" } as const;

export function HistoryTable({ history }: { history: StageChange[] }) {
  if (history.length === 0) return <EmptyState title="No stage changes yet">Promotions and rollbacks are recorded here with who, when and why.</EmptyState>;
  return (
    <Table label="Promotion history">
      <TableHeader>
        <TableRow>
          <TableHead>When</TableHead>
          <TableHead>Who</TableHead>
          <TableHead>Version</TableHead>
          <TableHead>Change</TableHead>
          <TableHead>Action</TableHead>
          <TableHead>Reason</TableHead>
        </TableRow>
      </TableHeader>
      <TableBody>
        {history.map((change) => (
          <TableRow key={change.id} data-testid={`history-${change.id}`}>
            <TableCell className="text-xs">
              <Time iso={change.at} />
            </TableCell>
            <TableCell>{change.actor ?? <span className="text-muted-foreground">—</span>}</TableCell>
            <TableCell className="tabular-nums">v{change.version}</TableCell>
            <TableCell>
              <span className="inline-flex items-center gap-1">
                <StageBadge stage={change.from_stage} />
                <ArrowRight className="size-3 text-muted-foreground" aria-label="to" />
                <StageBadge stage={change.to_stage} />
              </span>
            </TableCell>
            <TableCell>
              <Badge variant={change.action === "rollback" ? "warning" : "outline"}>{ACTION[change.action as keyof typeof ACTION] ?? change.action}</Badge>
            </TableCell>
            <TableCell className="max-w-64 text-sm break-words">{change.reason || <span className="text-muted-foreground">—</span>}</TableCell>
          </TableRow>
        ))}
      </TableBody>
    </Table>
  );
}
