import type { Metadata } from "next";

import { AutoRefresh } from "@/components/system/auto-refresh";
import { Badge } from "@/components/ui/badge";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { EmptyState, ErrorState } from "@/components/ui/states";
import { Table, TableBody, TableCell, TableHead, TableHeader, TableRow } from "@/components/ui/table";
import { formatInt, formatNumber } from "@/lib/format";
import { apiGet, requireSession } from "@/lib/server/api";

export const metadata: Metadata = { title: "System" };

interface Overview {
  http: { route: string; method: string; count: number; mean_ms: number; p50_ms: number | null; p99_ms: number | null }[];
  websockets_open: Record<string, number>;
  db_pool: Record<string, Record<string, number>>;
  celery_queues: Record<string, number>;
  celery_unacked: number | null;
  collectors_up: Record<string, boolean>;
}
interface Workers { count: number; workers: { name?: string; hostname?: string; active?: number }[] }

export default async function SystemPage() {
  const session = await requireSession();
  if (session.user.role !== "admin") {
    return <ErrorState error={{ status: 403, message: "The system page is for admins.", requestId: null }} title="Not for your role" />;
  }
  const [overview, workers] = await Promise.all([apiGet<Overview>("/api/v1/system/overview"), apiGet<Workers>("/api/v1/system/workers")]);
  if (!overview.ok) return <ErrorState error={overview.error} title="System figures could not be loaded" />;
  const o = overview.data;
  const sockets = Object.values(o.websockets_open).reduce((a, b) => a + b, 0);
  return (
    <div className="grid grid-cols-1 gap-6">
      <AutoRefresh seconds={5} />
      <div>
        <h1 className="text-2xl font-semibold tracking-tight">System</h1>
        <p className="text-sm text-muted-foreground">Every serving process together, since each started; refreshed every 5 s.</p>
      </div>
      <div className="grid grid-cols-1 gap-4 sm:grid-cols-2 lg:grid-cols-4">
        <Card aria-labelledby="ws-title">
          <CardHeader><CardTitle id="ws-title">Open websockets</CardTitle></CardHeader>
          <CardContent>
            <p className="text-2xl font-semibold tabular-nums" data-testid="ws-open">{formatInt(sockets)}</p>
            <ul className="text-xs text-muted-foreground">{Object.entries(o.websockets_open).map(([k, v]) => <li key={k}>{k}: {v}</li>)}</ul>
          </CardContent>
        </Card>
        <Card aria-labelledby="pool-title">
          <CardHeader><CardTitle id="pool-title">Database pool</CardTitle></CardHeader>
          <CardContent>
            {Object.keys(o.db_pool).length ? (
              <ul className="grid gap-1 text-sm">
                {Object.entries(o.db_pool).map(([db, f]) => (
                  <li key={db}><span className="font-mono text-xs">{db}</span>: {f.busy ?? 0} busy, {f.idle ?? 0} idle of {f.max ?? "–"}; {f.waiting ?? 0} waiting</li>
                ))}
              </ul>
            ) : <p className="text-sm text-muted-foreground">No pool (SQLite, or no query yet).</p>}
          </CardContent>
        </Card>
        <Card aria-labelledby="queues-title">
          <CardHeader><CardTitle id="queues-title">Celery queues</CardTitle></CardHeader>
          <CardContent>
            <ul className="grid gap-1 text-sm">
              {Object.entries(o.celery_queues).map(([q, n]) => <li key={q}><span className="font-mono text-xs">{q}</span>: {formatInt(n)} waiting</li>)}
              {o.celery_unacked !== null ? <li>{formatInt(o.celery_unacked)} delivered, not yet acknowledged</li> : null}
            </ul>
          </CardContent>
        </Card>
        <Card aria-labelledby="workers-title">
          <CardHeader><CardTitle id="workers-title">Workers</CardTitle></CardHeader>
          <CardContent>
            {workers.ok ? <p className="text-2xl font-semibold tabular-nums">{formatInt(workers.data.count)}</p> : <p className="text-sm text-destructive">{workers.error.message}</p>}
            <ul className="flex flex-wrap gap-1">
              {Object.entries(o.collectors_up).map(([k, up]) => <li key={k}><Badge variant={up ? "success" : "destructive"}>{k}</Badge></li>)}
            </ul>
          </CardContent>
        </Card>
      </div>
      <Card aria-labelledby="http-title">
        <CardHeader><CardTitle id="http-title">HTTP latency per route</CardTitle></CardHeader>
        <CardContent>
          {o.http.length ? (
            <Table label="Requests by route">
              <TableHeader>
                <TableRow>
                  <TableHead>Route</TableHead><TableHead>Method</TableHead><TableHead className="text-right">Requests</TableHead>
                  <TableHead className="text-right">Mean ms</TableHead><TableHead className="text-right">p50 ms</TableHead><TableHead className="text-right">p99 ms</TableHead>
                </TableRow>
              </TableHeader>
              <TableBody>
                {o.http.map((r) => (
                  <TableRow key={`${r.method} ${r.route}`}>
                    <TableCell className="font-mono text-xs break-all">{r.route}</TableCell>
                    <TableCell>{r.method}</TableCell>
                    <TableCell className="text-right tabular-nums">{formatInt(r.count)}</TableCell>
                    <TableCell className="text-right tabular-nums">{formatNumber(r.mean_ms)}</TableCell>
                    <TableCell className="text-right tabular-nums">{r.p50_ms === null ? "–" : formatNumber(r.p50_ms)}</TableCell>
                    <TableCell className="text-right tabular-nums">{r.p99_ms === null ? "–" : formatNumber(r.p99_ms)}</TableCell>
                  </TableRow>
                ))}
              </TableBody>
            </Table>
          ) : <EmptyState title="No requests measured yet" />}
        </CardContent>
      </Card>
    </div>
  );
}
