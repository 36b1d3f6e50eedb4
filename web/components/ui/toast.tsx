"use client";

import { X } from "lucide-react";
import { Toast as ToastPrimitive } from "radix-ui";

import { useToasts } from "@/lib/stores/toast";
import { cn } from "@/lib/utils";

/** Toasts are announced politely (aria-live) by Radix's viewport; errors stay until dismissed. */
export function Toaster() {
  const toasts = useToasts((s) => s.toasts);
  const dismiss = useToasts((s) => s.dismiss);
  return (
    <ToastPrimitive.Provider swipeDirection="right" duration={6000}>
      {toasts.map((t) => (
        <ToastPrimitive.Root
          key={t.id}
          duration={t.variant === "error" ? Infinity : 6000}
          onOpenChange={(open) => !open && dismiss(t.id)}
          className={cn(
            "relative grid gap-1 rounded-md border bg-card p-3 pr-8 shadow-lg",
            t.variant === "error" && "border-destructive/50",
            t.variant === "success" && "border-success/50",
          )}
        >
          <ToastPrimitive.Title className={cn("text-sm font-semibold", t.variant === "error" && "text-destructive")}>{t.title}</ToastPrimitive.Title>
          {t.description ? <ToastPrimitive.Description className="text-sm break-words text-muted-foreground">{t.description}</ToastPrimitive.Description> : null}
          <ToastPrimitive.Close className="absolute top-2 right-2 rounded-sm p-1 opacity-70 hover:opacity-100" aria-label="Dismiss">
            <X className="size-3.5" aria-hidden />
          </ToastPrimitive.Close>
        </ToastPrimitive.Root>
      ))}
      <ToastPrimitive.Viewport className="fixed right-0 bottom-0 z-[100] flex max-h-screen w-full flex-col gap-2 p-3 sm:max-w-sm" />
    </ToastPrimitive.Provider>
  );
}
