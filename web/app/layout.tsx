import "./globals.css";

import { GeistSans } from "geist/font/sans";
import type { Metadata, Viewport } from "next";
import { cookies } from "next/headers";

import { cn } from "@/lib/utils";

export const metadata: Metadata = {
  title: { default: "Torchwire", template: "%s · Torchwire" },
  description: "Train, serve and watch PyTorch models.",
  icons: { icon: "/icon.svg" },
};

export const viewport: Viewport = { width: "device-width", initialScale: 1 };

/** Geist for text (from the `geist` package: served from here, nothing from another origin); code uses the
 * system's monospace font, which saves every page a second font download.
 * The theme is a plain preference cookie (light, dark, or unset: follow the system), read here so the first paint is right. */
export default async function RootLayout({ children }: { children: React.ReactNode }) {
  const theme = (await cookies()).get("tw_theme")?.value;
  return (
    <html lang="en" className={cn(GeistSans.variable, theme === "dark" && "dark", theme === "light" && "light")}>
      <body className="min-h-dvh antialiased">{children}</body>
    </html>
  );
}
