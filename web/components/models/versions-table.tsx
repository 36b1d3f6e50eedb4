import { PromoteControl } from "@/components/models/promote-control";
import { StageBadge } from "@/components/models/stage-badge";
import { CopyButton } from "@/components/ui/copy-button";
import { EmptyState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { Time } from "@/components/ui/time";
import type { ModelVersion } from "@/lib/api/types";
import { formatBytes, formatNumber, shortHash } from "@/lib/format";

function Metrics({ metrics }: { metrics: Record<string, unknown> }) {
  const shown = Object.entries(metrics).filter(([, v]) => typeof v === "number").slice(0, 4) as [string, number][];
  if (!shown.length) return <span className="text-muted-foreground">—</span>;
  return (
    <dl className="grid grid-cols-[auto_auto] gap-x-2 text-xs">
      {shown.map(([key, value]) => (
        <div key={key} className="contents">
          <dt className="text-muted-foreground">{key}</dt>
          <dd className="tabular-nums">{formatNumber(value)}</dd>
        </div>
      ))}
    </dl>
  );
}

export function VersionsTable({ model, versions, canManage }: { model: string; versions: ModelVersion[]; canManage: boolean }) {
  if (versions.length === 0) {
    return <EmptyState title="No versions yet">{canManage ? "Publish a safetensors file, or train a version from a dataset." : "The owner has not published any version."}</EmptyState>;
  }
  const newestFirst = [...versions].sort((a, b) => b.version - a.version);
  return (
    <Table label="Versions">
      <TableHeader>
        <TableRow>
          <TableHead>Version</TableHead>
          <TableHead>Stage</TableHead>
          <TableHead>Format</TableHead>
          <TableHead>sha256</TableHead>
          <TableHead>Created</TableHead>
          <TableHead>Training metrics</TableHead>
          {canManage ? <TableHead>
            <span className="sr-only">Actions</span>
          </TableHead> : null}
        </TableRow>
      </TableHeader>
      <TableBody>
        {newestFirst.map((v) => (
          <TableRow key={v.version} data-testid={`version-${v.version}`}>
            <TableCell className="font-medium tabular-nums">v{v.version}</TableCell>
            <TableCell>
              <StageBadge stage={v.stage} />
            </TableCell>
            <TableCell className="text-xs">
              <div>{v.format}</div>
              <div className="text-muted-foreground">{v.architecture || "—"}</div>
              <div className="text-muted-foreground">{formatBytes(v.artifact_size)}</div>
            </TableCell>
            <TableCell>
              <div className="flex items-center gap-1">
                <code className="font-mono text-xs" title={v.artifact_sha256}>
                  {shortHash(v.artifact_sha256)}
                </code>
                <CopyButton value={v.artifact_sha256} label="Copy" aria-label={`Copy the sha256 of version ${v.version}`} className="h-7 px-2" />
              </div>
            </TableCell>
            <TableCell className="text-xs">
              <Time iso={v.created_at} />
              <div className="text-muted-foreground">
                {v.created_by ?? "unknown"}
                {v.source_job_id ? ` · job #${v.source_job_id}` : ""}
              </div>
            </TableCell>
            <TableCell>
              <Metrics metrics={v.metrics} />
            </TableCell>
            {canManage ? (
              <TableCell className="text-right">
                <PromoteControl model={model} version={v.version} stage={v.stage} />
              </TableCell>
            ) : null}
          </TableRow>
        ))}
      </TableBody>
    </Table>
  );
}
