import type { Metadata } from "next";
import Link from "next/link";

import { PublishForm } from "@/components/publish/publish-form";
import { ErrorState } from "@/components/ui/states";
import type { Architecture, Model, ModelVersion } from "@/lib/api/types";
import { canManageModel } from "@/lib/auth/store";
import { apiGet, enc, requireSession } from "@/lib/server/api";

export const metadata: Metadata = { title: "Publish a version" };

/** A model's first version: the plain MLP when the server has it (the common case), else the first listed. */
function defaultArchitecture(architectures: Architecture[]): string {
  return architectures.find((a) => a.name === "mlp")?.name ?? architectures[0]?.name ?? "";
}

export default async function PublishPage({ params }: { params: Promise<{ name: string }> }) {
  const session = await requireSession();
  const name = decodeURIComponent((await params).name);
  const [model, versions, architectures] = await Promise.all([
    apiGet<Model>(`/api/v1/models/${enc(name)}`),
    apiGet<ModelVersion[]>(`/api/v1/models/${enc(name)}/versions`),
    apiGet<{ architectures: Architecture[] }>("/api/v1/architectures"),
  ]);
  if (!model.ok) return <ErrorState error={model.error} title={model.error.status === 404 ? `No model named “${name}”` : "The model could not be loaded"} />;
  if (!architectures.ok) return <ErrorState error={architectures.error} title="The architectures could not be loaded" />;
  const latest = versions.ok ? [...versions.data].sort((a, b) => b.version - a.version).find((v) => v.format === "safetensors") : undefined;
  return (
    <div className="grid grid-cols-1 gap-6">
      <div>
        <p className="text-sm">
          <Link href={`/models/${enc(name)}`} className="text-primary underline-offset-4 hover:underline">
            {name}
          </Link>
        </p>
        <h1 className="text-2xl font-semibold tracking-tight">Publish a version</h1>
        <p className="text-sm text-muted-foreground">
          A safetensors file of weights for one of the server&apos;s architectures. Your browser checks every tensor before anything is uploaded; the server checks again.
        </p>
      </div>
      {canManageModel(session.user, model.data.owner) ? (
        <PublishForm
          model={name}
          architectures={architectures.data.architectures}
          initialArchitecture={latest?.architecture || defaultArchitecture(architectures.data.architectures)}
          initialConfig={latest?.config ?? null}
        />
      ) : (
        <ErrorState error={{ status: 403, message: "Only the model's owner (maintainer or higher) or an admin can publish versions.", requestId: null }} title="You cannot publish to this model" />
      )}
    </div>
  );
}
