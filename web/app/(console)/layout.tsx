import Link from "next/link";
import { cookies } from "next/headers";

import { SessionBridge } from "@/components/session/session-bridge";
import { LiveIndicator } from "@/components/shell/live-indicator";
import { NavLinks } from "@/components/shell/nav-links";
import { UserMenu } from "@/components/shell/user-menu";
import { requireSession } from "@/lib/server/api";

export default async function ConsoleLayout({ children }: { children: React.ReactNode }) {
  const session = await requireSession();
  const theme = (await cookies()).get("tw_theme")?.value;
  return (
    <div className="flex min-h-dvh flex-col">
      <a href="#main" className="sr-only focus:not-sr-only focus:absolute focus:top-2 focus:left-2 focus:z-50 focus:rounded-md focus:bg-card focus:px-3 focus:py-2">
        Skip to content
      </a>
      <header className="sticky top-0 z-40 border-b bg-background/95 backdrop-blur">
        <div className="mx-auto flex max-w-6xl flex-wrap items-center gap-x-4 gap-y-1 px-3 py-2 sm:px-6">
          <Link href="/" className="flex items-center gap-2 font-semibold">
            {/* eslint-disable-next-line @next/next/no-img-element */}
            <img src="/icon.svg" alt="" width={24} height={24} />
            Torchwire
          </Link>
          <div className="order-3 w-full sm:order-none sm:w-auto sm:flex-1">
            <NavLinks admin={session.user.role === "admin"} />
          </div>
          <div className="ml-auto flex items-center gap-3">
            <LiveIndicator />
            <UserMenu username={session.user.username} role={session.user.role} theme={theme === "dark" || theme === "light" ? theme : "system"} />
          </div>
        </div>
      </header>
      <main id="main" className="mx-auto w-full max-w-6xl flex-1 px-3 py-6 sm:px-6">
        {children}
      </main>
      <SessionBridge user={session.user} />
    </div>
  );
}
