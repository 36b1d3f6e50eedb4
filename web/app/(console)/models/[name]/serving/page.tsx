import type { Metadata } from "next";
import Link from "next/link";

import { ServingSettingsForm } from "@/components/models/serving-settings-form";
import { Tuner, type LivePoint } from "@/components/serving/tuner";
import { ErrorState } from "@/components/ui/states";
import type { Model } from "@/lib/api/types";
import { canManageModel } from "@/lib/auth/store";
import { apiGet, enc, requireSession } from "@/lib/server/api";

export async function generateMetadata({ params }: { params: Promise<{ name: string }> }): Promise<Metadata> {
  return { title: `Serving · ${(await params).name}` };
}

export default async function ServingPage({ params }: { params: Promise<{ name: string }> }) {
  const { name } = await params;
  const session = await requireSession();
  const [model, live] = await Promise.all([
    apiGet<Model>(`/api/v1/models/${enc(name)}`),
    apiGet<{ points: LivePoint[] }>(`/api/v1/models/${enc(name)}/stats/live?minutes=5`),
  ]);
  if (!model.ok) return <ErrorState error={model.error} title={`Model ${name} could not be loaded`} />;
  return (
    <div className="grid grid-cols-1 gap-6">
      <div>
        <p className="text-sm text-muted-foreground">
          <Link href="/models" className="underline-offset-4 hover:underline">Models</Link> /{" "}
          <Link href={`/models/${enc(name)}`} className="underline-offset-4 hover:underline">{name}</Link> / serving
        </p>
        <h1 className="text-2xl font-semibold tracking-tight">Batching tuner</h1>
        <p className="text-sm text-muted-foreground">Change the batch size or the delay and watch the figures move: every serving process applies a change within a second.</p>
      </div>
      {live.ok ? <Tuner model={model.data.name} initial={live.data.points} /> : <ErrorState error={live.error} title="Live figures could not be loaded" />}
      <ServingSettingsForm model={model.data} canManage={canManageModel(session.user, model.data.owner)} />
    </div>
  );
}
