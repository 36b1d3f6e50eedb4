"use client";

import { X } from "lucide-react";
import { useEffect } from "react";

import { useToasts, type ToastItem } from "@/lib/stores/toast";
import { cn } from "@/lib/utils";

function Toast({ toast, dismiss }: { toast: ToastItem; dismiss: (id: number) => void }) {
  const onDismiss = () => dismiss(toast.id);
  useEffect(() => {
    // Errors stay until dismissed; the rest go after a while.
    if (toast.variant === "error") return;
    const timer = setTimeout(() => dismiss(toast.id), 6000);
    return () => clearTimeout(timer);
  }, [toast.id, toast.variant, dismiss]);
  return (
    <div
      role={toast.variant === "error" ? "alert" : "status"}
      className={cn(
        "relative grid gap-1 rounded-md border bg-card p-3 pr-8 shadow-lg",
        toast.variant === "error" && "border-destructive/50",
        toast.variant === "success" && "border-success/50",
      )}
    >
      <p className={cn("text-sm font-semibold", toast.variant === "error" && "text-destructive")}>{toast.title}</p>
      {toast.description ? <p className="text-sm break-words text-muted-foreground">{toast.description}</p> : null}
      <button type="button" onClick={onDismiss} className="absolute top-2 right-2 rounded-sm p-1 opacity-70 hover:opacity-100" aria-label="Dismiss">
        <X className="size-3.5" aria-hidden />
      </button>
    </div>
  );
}

/** Notifications, announced by screen readers as they appear (status; errors as alerts). */
export function Toaster() {
  const toasts = useToasts((s) => s.toasts);
  const dismiss = useToasts((s) => s.dismiss);
  return (
    <section aria-label="Notifications" className="pointer-events-none fixed right-0 bottom-0 z-[100] w-full p-3 sm:max-w-sm">
      <div className="pointer-events-auto flex flex-col gap-2">
        {toasts.map((t) => (
          <Toast key={t.id} toast={t} dismiss={dismiss} />
        ))}
      </div>
    </section>
  );
}
