"use client";

import dynamic from "next/dynamic";
import { useEffect } from "react";

import { Toaster } from "@/components/ui/toast";
import { useSession, type SessionUser } from "@/lib/auth/store";

// Loaded when a session actually ends, so no page pays for the dialog's code up front.
const SessionExpiredDialog = dynamic(() => import("@/components/session/session-expired-dialog").then((m) => m.SessionExpiredDialog), {
  ssr: false,
});

/** Hands the server's idea of who is signed in to the client stores; hosts the re-sign-in dialog and toasts. */
export function SessionBridge({ user }: { user: SessionUser }) {
  const expired = useSession((s) => s.status === "expired");
  useEffect(() => {
    useSession.getState().setUser(user);
  }, [user]);
  return (
    <>
      {expired ? <SessionExpiredDialog /> : null}
      <Toaster />
    </>
  );
}
