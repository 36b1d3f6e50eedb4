"use client";

import { LogOut, Monitor, Moon, Sun, UserRound } from "lucide-react";
import { useState } from "react";

import { RoleBadge } from "@/components/shell/role-badge";
import { buttonVariants } from "@/components/ui/button";
import {
  DropdownMenu,
  DropdownMenuContent,
  DropdownMenuGroup,
  DropdownMenuItem,
  DropdownMenuLabel,
  DropdownMenuRadioItem,
  DropdownMenuSeparator,
  DropdownMenuTrigger,
} from "@/components/ui/dropdown-menu";
import { signOut } from "@/lib/session-actions";

type Theme = "system" | "light" | "dark";

function applyTheme(theme: Theme) {
  const root = document.documentElement;
  root.classList.toggle("dark", theme === "dark");
  root.classList.toggle("light", theme === "light");
  // A preference, not a credential: readable by the server for the first paint.
  document.cookie = theme === "system" ? "tw_theme=; path=/; max-age=0; samesite=lax" : `tw_theme=${theme}; path=/; max-age=31536000; samesite=lax`;
}

const THEMES = [
  { value: "system", label: "System", Icon: Monitor },
  { value: "light", label: "Light", Icon: Sun },
  { value: "dark", label: "Dark", Icon: Moon },
] as const;

export function UserMenu({ username, role, theme: initial }: { username: string; role: string; theme: Theme }) {
  const [theme, setTheme] = useState<Theme>(initial);
  return (
    <DropdownMenu>
      <DropdownMenuTrigger className={buttonVariants({ variant: "ghost", size: "sm", className: "gap-2" })}>
        <UserRound aria-hidden />
        <span className="sr-only">Account menu of</span>
        <span className="hidden max-w-32 truncate sm:inline">{username}</span>
        <RoleBadge role={role} />
      </DropdownMenuTrigger>
      <DropdownMenuContent label="Account">
        <DropdownMenuLabel>
          Signed in as <span className="font-semibold text-foreground">{username}</span>
        </DropdownMenuLabel>
        <DropdownMenuSeparator />
        <DropdownMenuGroup label="Theme">
          <DropdownMenuLabel>Theme</DropdownMenuLabel>
          {THEMES.map(({ value, label, Icon }) => (
            <DropdownMenuRadioItem
              key={value}
              checked={theme === value}
              onSelect={() => {
                setTheme(value);
                applyTheme(value);
              }}
            >
              <Icon aria-hidden /> {label}
            </DropdownMenuRadioItem>
          ))}
        </DropdownMenuGroup>
        <DropdownMenuSeparator />
        <DropdownMenuItem onSelect={() => void signOut()}>
          <LogOut aria-hidden /> Sign out
        </DropdownMenuItem>
      </DropdownMenuContent>
    </DropdownMenu>
  );
}
