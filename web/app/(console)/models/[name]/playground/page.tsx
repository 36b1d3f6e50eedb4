import type { Metadata } from "next";
import Link from "next/link";

import { Playground } from "@/components/playground/playground";
import { ErrorState } from "@/components/ui/states";
import type { Model, ModelVersion } from "@/lib/api/types";
import { hasRole } from "@/lib/auth/store";
import { apiGet, enc, requireSession } from "@/lib/server/api";

export const metadata: Metadata = { title: "Playground" };

export default async function PlaygroundPage({ params }: { params: Promise<{ name: string }> }) {
  const session = await requireSession();
  const name = decodeURIComponent((await params).name);
  const [model, versions] = await Promise.all([apiGet<Model>(`/api/v1/models/${enc(name)}`), apiGet<ModelVersion[]>(`/api/v1/models/${enc(name)}/versions`)]);
  if (!model.ok) return <ErrorState error={model.error} title={model.error.status === 404 ? `No model named “${name}”` : "The model could not be loaded"} />;
  if (!versions.ok) return <ErrorState error={versions.error} title="The versions could not be loaded" />;
  return (
    <div className="grid grid-cols-1 gap-6">
      <div>
        <p className="text-sm">
          <Link href={`/models/${enc(name)}`} className="text-primary underline-offset-4 hover:underline">
            {name}
          </Link>
        </p>
        <h1 className="text-2xl font-semibold tracking-tight">Playground</h1>
        <p className="text-sm text-muted-foreground">Call the model over REST, the V2 protocol or the websocket, and copy the call as code.</p>
      </div>
      {!hasRole(session.user, "member") ? (
        <ErrorState error={{ status: 403, message: "Calling models needs the member role or higher.", requestId: null }} title="You cannot call models" />
      ) : versions.data.length === 0 ? (
        <ErrorState error={{ status: 404, message: "This model has no versions to call yet.", requestId: null }} title="Nothing to call" />
      ) : (
        <Playground model={model.data} versions={versions.data} />
      )}
    </div>
  );
}
