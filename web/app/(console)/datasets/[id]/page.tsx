import type { Metadata } from "next";
import Link from "next/link";

import { BatchPredict } from "@/components/datasets/batch-predict";
import { DeleteDataset } from "@/components/datasets/delete-dataset";
import { Badge } from "@/components/ui/badge";
import { buttonVariants } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { ErrorState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { Time } from "@/components/ui/time";
import type { Dataset, DatasetColumn } from "@/lib/api/types";
import { formatBytes, formatInt, formatNumber } from "@/lib/format";
import { apiGet, enc } from "@/lib/server/api";

export async function generateMetadata({ params }: { params: Promise<{ id: string }> }): Promise<Metadata> {
  return { title: `Dataset ${(await params).id}` };
}

/** A column's small distribution: the top values' shares, or where the mean sits between min and max. */
function Distribution({ column }: { column: DatasetColumn }) {
  if (column.top.length && column.kind !== "numeric") {
    const total = Math.max(column.count - column.missing, 1);
    return (
      <ul className="grid w-40 gap-0.5" aria-label={`Most frequent values of ${column.name}`}>
        {column.top.slice(0, 4).map((t) => (
          <li key={t.value} className="grid grid-cols-[4rem_1fr] items-center gap-1 text-xs">
            <span className="truncate font-mono" title={t.value}>{t.value}</span>
            <span className="h-1.5 rounded bg-muted"><span className="block h-1.5 rounded bg-primary" style={{ width: `${(t.count / total) * 100}%` }} /></span>
          </li>
        ))}
      </ul>
    );
  }
  if (column.min !== null && column.max !== null && column.mean !== null) {
    const span = column.max - column.min || 1;
    const at = ((column.mean - column.min) / span) * 100;
    const sd = column.std !== null ? (column.std / span) * 100 : 0;
    return (
      <div className="w-40 text-xs" aria-label={`${column.name}: from ${column.min} to ${column.max}, mean ${column.mean}`} role="img">
        <div className="relative h-2 rounded bg-muted">
          <span className="absolute top-0 h-2 rounded bg-primary/30" style={{ left: `${Math.max(0, at - sd)}%`, width: `${Math.min(100, 2 * sd)}%` }} />
          <span className="absolute -top-0.5 h-3 w-0.5 bg-primary" style={{ left: `${at}%` }} />
        </div>
        <div className="flex justify-between text-muted-foreground"><span>{formatNumber(column.min)}</span><span>{formatNumber(column.max)}</span></div>
      </div>
    );
  }
  return <span className="text-xs text-muted-foreground">–</span>;
}

export default async function DatasetPage({ params }: { params: Promise<{ id: string }> }) {
  const { id } = await params;
  const [dataset, preview] = await Promise.all([
    apiGet<Dataset>(`/api/v1/datasets/${enc(id)}`),
    apiGet<{ columns: string[]; rows: Record<string, string>[] }>(`/api/v1/datasets/${enc(id)}/preview?rows=20`),
  ]);
  if (!dataset.ok) return <ErrorState error={dataset.error} title={`Dataset ${id} could not be loaded`} />;
  const d = dataset.data;
  const columns = d.columns as unknown as DatasetColumn[];
  return (
    <div className="grid grid-cols-1 gap-6">
      <div className="flex flex-wrap items-end gap-3">
        <div className="min-w-0">
          <p className="text-sm text-muted-foreground"><Link href="/datasets" className="underline-offset-4 hover:underline">Datasets</Link> / {d.id}</p>
          <h1 className="truncate text-2xl font-semibold tracking-tight">{d.name}</h1>
          <p className="text-sm text-muted-foreground">
            {formatInt(d.row_count)} rows · {columns.length} columns · {formatBytes(d.size_bytes)} · {d.owner} · <Time iso={d.created_at} />
          </p>
        </div>
        <div className="ml-auto flex gap-2">
          <Link href={`/train?dataset=${d.id}`} className={buttonVariants()}>Train a model</Link>
          <DeleteDataset id={d.id} name={d.name} />
        </div>
      </div>
      <Card aria-labelledby="profile-title">
        <CardHeader><CardTitle id="profile-title">Column profile</CardTitle></CardHeader>
        <CardContent>
          <Table label="Columns">
            <TableHeader>
              <TableRow>
                <TableHead>Column</TableHead>
                <TableHead>Type</TableHead>
                <TableHead className="text-right">Missing</TableHead>
                <TableHead className="text-right">Distinct</TableHead>
                <TableHead>Distribution</TableHead>
              </TableRow>
            </TableHeader>
            <TableBody>
              {columns.map((c) => (
                <TableRow key={c.name}>
                  <TableCell className="font-mono text-xs">{c.name}</TableCell>
                  <TableCell><Badge variant="outline">{c.kind}</Badge></TableCell>
                  <TableCell className="text-right tabular-nums">{formatInt(c.missing)}</TableCell>
                  <TableCell className="text-right tabular-nums">{formatInt(c.distinct)}{c.distinct_capped ? "+" : ""}</TableCell>
                  <TableCell><Distribution column={c} /></TableCell>
                </TableRow>
              ))}
            </TableBody>
          </Table>
        </CardContent>
      </Card>
      <BatchPredict datasetId={d.id} />
      <Card aria-labelledby="preview-title">
        <CardHeader><CardTitle id="preview-title">First rows</CardTitle></CardHeader>
        <CardContent>
          {preview.ok ? (
            <Table label="Preview rows">
              <TableHeader><TableRow>{preview.data.columns.map((c) => <TableHead key={c}>{c}</TableHead>)}</TableRow></TableHeader>
              <TableBody>
                {preview.data.rows.map((row, i) => (
                  <TableRow key={i}>{preview.data.columns.map((c) => <TableCell key={c} className="font-mono text-xs">{row[c] ?? ""}</TableCell>)}</TableRow>
                ))}
              </TableBody>
            </Table>
          ) : <ErrorState error={preview.error} title="The preview could not be loaded" />}
        </CardContent>
      </Card>
    </div>
  );
}
