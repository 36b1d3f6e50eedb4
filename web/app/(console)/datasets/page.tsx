import type { Metadata } from "next";
import Link from "next/link";

import { DatasetUpload } from "@/components/datasets/dataset-upload";
import { EmptyState, ErrorState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { Time } from "@/components/ui/time";
import type { Dataset } from "@/lib/api/types";
import { formatBytes, formatInt } from "@/lib/format";
import { apiGet } from "@/lib/server/api";

export const metadata: Metadata = { title: "Datasets" };

export default async function DatasetsPage() {
  const datasets = await apiGet<Dataset[]>("/api/v1/datasets");
  return (
    <div className="grid grid-cols-1 gap-6">
      <div>
        <h1 className="text-2xl font-semibold tracking-tight">Datasets</h1>
        <p className="text-sm text-muted-foreground">CSV files to train on and to run batch predictions over.</p>
      </div>
      <DatasetUpload />
      {!datasets.ok ? <ErrorState error={datasets.error} title="Datasets could not be loaded" /> : datasets.data.length === 0 ? (
        <EmptyState title="No datasets yet">Upload a CSV above to profile it and train a model on it.</EmptyState>
      ) : (
        <Table label="Datasets">
          <TableHeader>
            <TableRow>
              <TableHead>Name</TableHead>
              <TableHead className="text-right">Rows</TableHead>
              <TableHead className="text-right">Columns</TableHead>
              <TableHead className="text-right">Size</TableHead>
              <TableHead>Owner</TableHead>
              <TableHead>Uploaded</TableHead>
            </TableRow>
          </TableHeader>
          <TableBody>
            {datasets.data.map((d) => (
              <TableRow key={d.id}>
                <TableCell><Link href={`/datasets/${d.id}`} className="font-medium underline-offset-4 hover:underline">{d.name}</Link></TableCell>
                <TableCell className="text-right tabular-nums">{formatInt(d.row_count)}</TableCell>
                <TableCell className="text-right tabular-nums">{d.columns.length}</TableCell>
                <TableCell className="text-right tabular-nums">{formatBytes(d.size_bytes)}</TableCell>
                <TableCell>{d.owner}</TableCell>
                <TableCell className="text-muted-foreground"><Time iso={d.created_at} /></TableCell>
              </TableRow>
            ))}
          </TableBody>
        </Table>
      )}
    </div>
  );
}
