"use client";

import dynamic from "next/dynamic";
import { useState } from "react";

import { Button } from "@/components/ui/button";

// The dialog's code (Radix Dialog and its focus and scroll locks) loads on the first click, so the model
// page's first load stays inside its JavaScript budget.
const PromoteDialog = dynamic(() => import("@/components/models/promote-dialog").then((m) => m.PromoteDialog), { ssr: false });

export function PromoteControl({ model, version, stage }: { model: string; version: number; stage: string }) {
  const [wanted, setWanted] = useState(false);
  if (wanted) return <PromoteDialog model={model} version={version} stage={stage} defaultOpen />;
  return (
    <Button variant="outline" size="sm" aria-label={`Promote version ${version}`} onClick={() => setWanted(true)}>
      Promote…
    </Button>
  );
}
