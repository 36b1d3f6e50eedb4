import type { Metadata } from "next";
import Link from "next/link";

import { TrainWizard } from "@/components/train/train-wizard";
import { EmptyState, ErrorState } from "@/components/ui/states";
import type { Dataset } from "@/lib/api/types";
import { apiGet, publicGet } from "@/lib/server/api";
import { hyperFields } from "@/lib/train";

export const metadata: Metadata = { title: "Train a model" };

export default async function TrainPage({ searchParams }: { searchParams: Promise<{ dataset?: string }> }) {
  const wanted = Number((await searchParams).dataset);
  const [datasets, openapi] = await Promise.all([apiGet<Dataset[]>("/api/v1/datasets"), publicGet<unknown>("/api/v1/openapi.json")]);
  if (!datasets.ok) return <ErrorState error={datasets.error} title="Datasets could not be loaded" />;
  if (!openapi.ok) return <ErrorState error={openapi.error} title="The API's schema could not be loaded" />;
  return (
    <div className="grid grid-cols-1 gap-6">
      <div>
        <h1 className="text-2xl font-semibold tracking-tight">Train a model</h1>
        <p className="text-sm text-muted-foreground">Hyperparameters and their limits come from the API&apos;s own schema.</p>
      </div>
      {datasets.data.length === 0 ? (
        <EmptyState title="No datasets yet"><Link href="/datasets" className="underline">Upload a CSV</Link> to train on.</EmptyState>
      ) : (
        <TrainWizard datasets={datasets.data} hyper={hyperFields(openapi.data)} initialDataset={Number.isInteger(wanted) && datasets.data.some((d) => d.id === wanted) ? wanted : null} />
      )}
    </div>
  );
}
