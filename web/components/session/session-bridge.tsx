"use client";

import { useEffect } from "react";

import { SessionExpiredDialog } from "@/components/session/session-expired-dialog";
import { Toaster } from "@/components/ui/toast";
import { useSession, type SessionUser } from "@/lib/auth/store";

/** Hands the server's idea of who is signed in to the client stores; hosts the re-sign-in dialog and toasts. */
export function SessionBridge({ user }: { user: SessionUser }) {
  useEffect(() => {
    useSession.getState().setUser(user);
  }, [user]);
  return (
    <>
      <SessionExpiredDialog />
      <Toaster />
    </>
  );
}
