import type { Metadata } from "next";

import { CreateModelDialog } from "@/components/models/create-model-dialog";
import { ModelList } from "@/components/models/model-list";
import { ErrorState } from "@/components/ui/states";
import type { Model } from "@/lib/api/types";
import { hasRole } from "@/lib/auth/store";
import { apiGet, requireSession } from "@/lib/server/api";

export const metadata: Metadata = { title: "Models" };

export default async function ModelsPage({ searchParams }: { searchParams: Promise<Record<string, string | string[] | undefined>> }) {
  const session = await requireSession();
  const [models, params] = await Promise.all([apiGet<Model[]>("/api/v1/models"), searchParams]);
  const query = typeof params.q === "string" ? params.q : "";
  return (
    <div className="grid grid-cols-1 gap-6">
      <div className="flex flex-wrap items-end justify-between gap-3">
        <div>
          <h1 className="text-2xl font-semibold tracking-tight">Models</h1>
          <p className="text-sm text-muted-foreground">Every model you own, that is shared with you, or that is public.</p>
        </div>
        {hasRole(session.user, "maintainer") ? <CreateModelDialog /> : null}
      </div>
      {models.ok ? <ModelList models={models.data} initialQuery={query} /> : <ErrorState error={models.error} title="Models could not be loaded" />}
    </div>
  );
}
