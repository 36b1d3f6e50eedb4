import type { Metadata } from "next";

import { ModelDetail } from "@/components/models/model-detail";
import { ErrorState } from "@/components/ui/states";
import type { Model, ModelVersion, StageChange } from "@/lib/api/types";
import { canManageModel } from "@/lib/auth/store";
import { apiGet, enc, requireSession } from "@/lib/server/api";

export async function generateMetadata({ params }: { params: Promise<{ name: string }> }): Promise<Metadata> {
  return { title: decodeURIComponent((await params).name) };
}

export default async function ModelPage({
  params,
  searchParams,
}: {
  params: Promise<{ name: string }>;
  searchParams: Promise<Record<string, string | string[] | undefined>>;
}) {
  const session = await requireSession();
  const name = decodeURIComponent((await params).name);
  const tab = (await searchParams).tab;
  const [model, versions, history] = await Promise.all([
    apiGet<Model>(`/api/v1/models/${enc(name)}`),
    apiGet<ModelVersion[]>(`/api/v1/models/${enc(name)}/versions`),
    apiGet<StageChange[]>(`/api/v1/models/${enc(name)}/history?limit=200`),
  ]);
  if (!model.ok) return <ErrorState error={model.error} title={model.error.status === 404 ? `No model named “${name}”` : "The model could not be loaded"} />;
  if (!versions.ok) return <ErrorState error={versions.error} title="The versions could not be loaded" />;
  if (!history.ok) return <ErrorState error={history.error} title="The promotion history could not be loaded" />;
  return (
    <ModelDetail
      model={model.data}
      versions={versions.data}
      history={history.data}
      canManage={canManageModel(session.user, model.data.owner)}
      canCall={["member", "maintainer", "admin"].includes(session.user.role)}
      tab={typeof tab === "string" && ["versions", "history", "settings"].includes(tab) ? tab : "versions"}
    />
  );
}
