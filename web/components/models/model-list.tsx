"use client";

import { Search } from "lucide-react";
import Link from "next/link";
import { useRouter } from "next/navigation";
import { useEffect, useMemo, useState } from "react";

import { StageBadge, VisibilityBadge } from "@/components/models/stage-badge";
import { Input } from "@/components/ui/input";
import { EmptyState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import type { Model } from "@/lib/api/types";

export function ModelList({ models, initialQuery }: { models: Model[]; initialQuery: string }) {
  const router = useRouter();
  const [query, setQuery] = useState(initialQuery);
  useEffect(() => {
    // The search is part of the address, so a filtered list can be bookmarked and shared.
    const timer = setTimeout(() => {
      const url = query ? `/models?q=${encodeURIComponent(query)}` : "/models";
      if (url !== window.location.pathname + window.location.search) router.replace(url, { scroll: false });
    }, 300);
    return () => clearTimeout(timer);
  }, [query, router]);
  const shown = useMemo(() => {
    const q = query.trim().toLowerCase();
    if (!q) return models;
    return models.filter((m) => [m.name, m.description, m.owner].some((text) => text.toLowerCase().includes(q)));
  }, [models, query]);

  return (
    <div className="grid grid-cols-1 gap-3">
      <div className="relative max-w-sm">
        <Search className="pointer-events-none absolute top-2.5 left-2.5 size-4 text-muted-foreground" aria-hidden />
        <label htmlFor="model-search" className="sr-only">
          Search models
        </label>
        <Input id="model-search" type="search" placeholder="Search by name, description or owner" className="pl-8" value={query} onChange={(e) => setQuery(e.target.value)} />
      </div>
      <p className="text-xs text-muted-foreground" aria-live="polite">
        {shown.length === models.length ? `${models.length} model${models.length === 1 ? "" : "s"}` : `${shown.length} of ${models.length} models`}
      </p>
      {models.length === 0 ? (
        <EmptyState title="No models yet">Maintainers create models here; members train them from datasets.</EmptyState>
      ) : shown.length === 0 ? (
        <EmptyState title={`Nothing matches “${query}”`} />
      ) : (
        <Table label="Models">
          <TableHeader>
            <TableRow>
              <TableHead>Name</TableHead>
              <TableHead>Production</TableHead>
              <TableHead>Latest</TableHead>
              <TableHead>Owner</TableHead>
              <TableHead>Visibility</TableHead>
            </TableRow>
          </TableHeader>
          <TableBody>
            {shown.map((model) => (
              <TableRow key={model.name}>
                <TableCell className="max-w-72">
                  <Link href={`/models/${encodeURIComponent(model.name)}`} className="font-medium text-primary underline-offset-4 hover:underline">
                    {model.name}
                  </Link>
                  {model.description ? <p className="truncate text-xs text-muted-foreground">{model.description}</p> : null}
                </TableCell>
                <TableCell>
                  {model.production_version !== null ? <StageBadge stage="production" version={model.production_version} /> : <span className="text-xs text-muted-foreground">none</span>}
                </TableCell>
                <TableCell className="tabular-nums">{model.latest_version !== null ? `v${model.latest_version}` : "—"}</TableCell>
                <TableCell>{model.owner}</TableCell>
                <TableCell>
                  <VisibilityBadge visibility={model.visibility} />
                </TableCell>
              </TableRow>
            ))}
          </TableBody>
        </Table>
      )}
    </div>
  );
}
