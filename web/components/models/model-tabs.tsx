"use client";

import { useRouter } from "next/navigation";
import { useState } from "react";

import { Tabs, TabsList, TabsTrigger } from "@/components/ui/tabs";

/** The model page's tabs; the open one is in the address (?tab=), so it survives a reload or a shared link. */
export function ModelTabs({ initial, children }: { initial: string; children: React.ReactNode }) {
  const router = useRouter();
  const [value, setValue] = useState(initial);
  return (
    <Tabs
      value={value}
      onValueChange={(next) => {
        setValue(next);
        const url = new URL(window.location.href);
        if (next === "versions") url.searchParams.delete("tab");
        else url.searchParams.set("tab", next);
        router.replace(url.pathname + url.search, { scroll: false });
      }}
    >
      <TabsList aria-label="Model sections">
        <TabsTrigger value="versions">Versions</TabsTrigger>
        <TabsTrigger value="history">History</TabsTrigger>
        <TabsTrigger value="settings">Settings</TabsTrigger>
      </TabsList>
      {children}
    </Tabs>
  );
}
