"use client";

import * as React from "react";

import { cn } from "@/lib/utils";

// A menu button (WAI-ARIA APG "menu button" pattern) written out rather than taken from Radix: the shell
// shows one on every page, and Radix's menu brings a positioning library (~20 kB gzip) for a menu that
// only ever opens below its button. Arrow keys, Home/End, Escape, Tab and clicks outside behave as the
// pattern says; focus returns to the button on close.

interface MenuContext {
  open: boolean;
  setOpen: (open: boolean, focusButton?: boolean) => void;
  buttonRef: React.RefObject<HTMLButtonElement | null>;
  menuId: string;
}

const Context = React.createContext<MenuContext | null>(null);

function useMenu(): MenuContext {
  const context = React.useContext(Context);
  if (!context) throw new Error("DropdownMenu parts must be inside <DropdownMenu>");
  return context;
}

export function DropdownMenu({ children }: { children: React.ReactNode }) {
  const [open, setOpenState] = React.useState(false);
  const buttonRef = React.useRef<HTMLButtonElement | null>(null);
  const menuId = React.useId();
  const setOpen = React.useCallback((next: boolean, focusButton = false) => {
    setOpenState(next);
    if (!next && focusButton) buttonRef.current?.focus();
  }, []);
  return (
    <Context.Provider value={{ open, setOpen, buttonRef, menuId }}>
      <div className="relative">{children}</div>
    </Context.Provider>
  );
}

export function DropdownMenuTrigger({ className, children, ...props }: React.ButtonHTMLAttributes<HTMLButtonElement>) {
  const { open, setOpen, buttonRef, menuId } = useMenu();
  return (
    <button
      ref={buttonRef}
      type="button"
      aria-haspopup="menu"
      aria-expanded={open}
      aria-controls={open ? menuId : undefined}
      className={className}
      onClick={() => setOpen(!open)}
      onKeyDown={(event) => {
        if (event.key === "ArrowDown" || event.key === "ArrowUp") {
          event.preventDefault();
          setOpen(true);
        }
      }}
      {...props}
    >
      {children}
    </button>
  );
}

function items(menu: HTMLElement): HTMLElement[] {
  return [...menu.querySelectorAll<HTMLElement>('[role^="menuitem"]:not([aria-disabled="true"])')];
}

export function DropdownMenuContent({ className, align = "end", label, children }: { className?: string; align?: "start" | "end"; label: string; children: React.ReactNode }) {
  const { open, setOpen, buttonRef, menuId } = useMenu();
  const ref = React.useRef<HTMLDivElement>(null);
  React.useEffect(() => {
    if (!open) return;
    const menu = ref.current;
    items(menu!)[0]?.focus();
    const outside = (event: PointerEvent) => {
      const target = event.target as Node;
      if (!menu?.contains(target) && !buttonRef.current?.contains(target)) setOpen(false);
    };
    document.addEventListener("pointerdown", outside);
    return () => document.removeEventListener("pointerdown", outside);
  }, [open, setOpen, buttonRef]);
  if (!open) return null;
  return (
    <div
      ref={ref}
      id={menuId}
      role="menu"
      aria-label={label}
      tabIndex={-1}
      className={cn("absolute top-full z-50 mt-1 min-w-44 rounded-md border bg-card p-1 text-foreground shadow-md", align === "end" ? "right-0" : "left-0", className)}
      onKeyDown={(event) => {
        const all = items(ref.current!);
        const index = all.indexOf(document.activeElement as HTMLElement);
        const move = (to: number) => {
          event.preventDefault();
          all[(to + all.length) % all.length]?.focus();
        };
        if (event.key === "ArrowDown") move(index + 1);
        else if (event.key === "ArrowUp") move(index - 1);
        else if (event.key === "Home") move(0);
        else if (event.key === "End") move(all.length - 1);
        else if (event.key === "Escape") {
          event.preventDefault();
          setOpen(false, true);
        } else if (event.key === "Tab") setOpen(false);
      }}
    >
      {children}
    </div>
  );
}

const item =
  "relative flex w-full cursor-default items-center gap-2 rounded-sm px-2 py-1.5 text-left text-sm outline-none select-none hover:bg-accent focus:bg-accent [&_svg]:size-4";

export function DropdownMenuItem({ className, onSelect, children }: { className?: string; onSelect: () => void; children: React.ReactNode }) {
  const { setOpen } = useMenu();
  return (
    <button
      type="button"
      role="menuitem"
      tabIndex={-1}
      className={cn(item, className)}
      onClick={() => {
        setOpen(false, true);
        onSelect();
      }}
    >
      {children}
    </button>
  );
}

export function DropdownMenuRadioItem({ className, checked, onSelect, children }: { className?: string; checked: boolean; onSelect: () => void; children: React.ReactNode }) {
  return (
    <button type="button" role="menuitemradio" aria-checked={checked} tabIndex={-1} className={cn(item, "pl-7", className)} onClick={onSelect}>
      <span className="absolute left-2 flex size-3.5 items-center justify-center" aria-hidden>
        {checked ? <span className="block size-2 rounded-full bg-current" /> : null}
      </span>
      {children}
    </button>
  );
}

export function DropdownMenuGroup({ label, children }: { label: string; children: React.ReactNode }) {
  return (
    <div role="group" aria-label={label}>
      {children}
    </div>
  );
}

export function DropdownMenuLabel({ className, children }: { className?: string; children: React.ReactNode }) {
  return (
    <div role="presentation" className={cn("px-2 py-1.5 text-xs font-medium text-muted-foreground", className)}>
      {children}
    </div>
  );
}

export function DropdownMenuSeparator() {
  return <div role="separator" className="-mx-1 my-1 h-px bg-border" />;
}
