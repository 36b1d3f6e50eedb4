import { FlaskConical, Upload, Gauge, LineChart as LineChartIcon } from "lucide-react";
import Link from "next/link";

import { HistoryTable } from "@/components/models/history-table";
import { LiveServing } from "@/components/models/live-serving";
import { ModelTabs } from "@/components/models/model-tabs";
import { RollbackButton } from "@/components/models/rollback-button";
import { ServingSettingsForm, SharingForm } from "@/components/models/settings-lazy";
import { StageBadge, VisibilityBadge } from "@/components/models/stage-badge";
import { VersionsTable } from "@/components/models/versions-table";
import { buttonVariants } from "@/components/ui/button";
import { TabsContent } from "@/components/ui/tabs";
import type { Model, ModelVersion, StageChange } from "@/lib/api/types";
import { rollbackTarget } from "@/lib/registry/rollback";

export function ModelDetail({ model, versions, history, canManage, canCall, tab }: {
  model: Model;
  versions: ModelVersion[];
  history: StageChange[];
  canManage: boolean;
  canCall: boolean;
  tab: string;
}) {
  const base = `/models/${encodeURIComponent(model.name)}`;
  const target = rollbackTarget(history, model.production_version);
  return (
    <div className="grid grid-cols-1 gap-6">
      <div className="flex flex-wrap items-start justify-between gap-4">
        <div className="min-w-0">
          <div className="flex flex-wrap items-center gap-2">
            <h1 className="text-2xl font-semibold tracking-tight break-all">{model.name}</h1>
            <VisibilityBadge visibility={model.visibility} />
            {model.production_version !== null ? <StageBadge stage="production" version={model.production_version} /> : <StageBadge stage="none" />}
          </div>
          <p className="mt-1 text-sm text-muted-foreground">
            {model.description || "No description."} · Owner <span className="text-foreground">{model.owner}</span>
          </p>
        </div>
        <div className="flex flex-wrap gap-2">
          {canCall ? (
            <Link href={`${base}/playground`} className={buttonVariants({ variant: "outline" })}>
              <FlaskConical aria-hidden /> Playground
            </Link>
          ) : null}
          <Link href={`${base}/serving`} className={buttonVariants({ variant: "outline" })}>
            <Gauge aria-hidden /> Serving
          </Link>
          <Link href={`${base}/monitoring`} className={buttonVariants({ variant: "outline" })}>
            <LineChartIcon aria-hidden /> Monitoring
          </Link>
          {canManage ? (
            <>
              <Link href={`${base}/publish`} className={buttonVariants({ variant: "outline" })}>
                <Upload aria-hidden /> Publish version
              </Link>
              <RollbackButton model={model.name} target={target} production={model.production_version} />
            </>
          ) : null}
        </div>
      </div>

      <LiveServing model={model.name} production={model.production_version} />

      <ModelTabs initial={tab}>
        <TabsContent value="versions">
          <VersionsTable model={model.name} versions={versions} canManage={canManage} />
        </TabsContent>
        <TabsContent value="history">
          <HistoryTable history={history} />
        </TabsContent>
        <TabsContent value="settings" className="grid grid-cols-1 gap-6 lg:grid-cols-2">
          <ServingSettingsForm model={model} canManage={canManage} />
          <SharingForm model={model} canManage={canManage} />
        </TabsContent>
      </ModelTabs>
    </div>
  );
}
