import type { Metadata } from "next";

import { ApiKeys } from "@/components/keys/api-keys";
import { ErrorState } from "@/components/ui/states";
import type { ApiKey } from "@/lib/api/types";
import { apiGet } from "@/lib/server/api";

export const metadata: Metadata = { title: "API keys" };

export default async function KeysPage() {
  const keys = await apiGet<ApiKey[]>("/api/v1/auth/api-keys");
  return (
    <div className="grid grid-cols-1 gap-6">
      <div>
        <h1 className="text-2xl font-semibold tracking-tight">API keys</h1>
        <p className="text-sm text-muted-foreground">
          For scripts and services: send <code className="font-mono">Authorization: Bearer &lt;key&gt;</code>. A key acts as you, with your role, until you revoke it.
        </p>
      </div>
      {keys.ok ? <ApiKeys initial={keys.data} /> : <ErrorState error={keys.error} title="Your keys could not be loaded" />}
    </div>
  );
}
