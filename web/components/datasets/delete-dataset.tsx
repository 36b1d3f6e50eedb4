"use client";

import { Trash2 } from "lucide-react";
import { useRouter } from "next/navigation";
import { useState } from "react";

import { Button, buttonVariants } from "@/components/ui/button";
import { AlertDialog, AlertDialogAction, AlertDialogCancel, AlertDialogContent, AlertDialogDescription, AlertDialogTitle, AlertDialogTrigger } from "@/components/ui/dialog";
import { api } from "@/lib/api/client";
import { ApiError } from "@/lib/api/errors";
import { toast } from "@/lib/stores/toast";

export function DeleteDataset({ id, name }: { id: number; name: string }) {
  const router = useRouter();
  const [busy, setBusy] = useState(false);
  return (
    <AlertDialog>
      <AlertDialogTrigger asChild>
        <Button variant="outline" disabled={busy}><Trash2 aria-hidden /> Delete</Button>
      </AlertDialogTrigger>
      <AlertDialogContent>
        <AlertDialogTitle>Delete {name}?</AlertDialogTitle>
        <AlertDialogDescription>The file and its profile are removed. Models trained on it keep working.</AlertDialogDescription>
        <div className="mt-4 flex justify-end gap-2">
          <AlertDialogCancel>Keep it</AlertDialogCancel>
          <AlertDialogAction
            className={buttonVariants({ variant: "destructive" })}
            onClick={async () => {
              setBusy(true);
              try {
                await api(`/api/v1/datasets/${id}`, { method: "DELETE" });
                toast(`Deleted ${name}`, { variant: "success" });
                router.push("/datasets");
                router.refresh();
              } catch (caught) {
                const error = caught instanceof ApiError ? caught : ApiError.network(caught);
                toast("Not deleted", { description: `${error.message}${error.requestId ? ` (request ${error.requestId})` : ""}`, variant: "error" });
              } finally {
                setBusy(false);
              }
            }}
          >
            Delete
          </AlertDialogAction>
        </div>
      </AlertDialogContent>
    </AlertDialog>
  );
}
