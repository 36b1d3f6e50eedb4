"use client";

import dynamic from "next/dynamic";

import { Skeleton } from "@/components/ui/skeleton";

// The settings tab's forms are code-split: their code loads when the tab is first shown. Rendered in the
// browser only, so nobody types into a server-rendered field that hydration would then reset.
const loading = () => <Skeleton className="h-64 w-full" />;

export const ServingSettingsForm = dynamic(() => import("@/components/models/serving-settings-form").then((m) => m.ServingSettingsForm), {
  loading,
  ssr: false,
});
export const SharingForm = dynamic(() => import("@/components/models/sharing-form").then((m) => m.SharingForm), { loading, ssr: false });
