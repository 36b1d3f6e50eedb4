// Who is signed in, on the client, and whether the session needs the user (an expired session is
// renewed in a dialog over the page, so nothing the user typed is lost).
import { create } from "zustand";

export interface SessionUser {
  username: string;
  role: string;
}

export type SessionStatus = "active" | "expired" | "signed_out";

interface SessionState {
  user: SessionUser | null;
  status: SessionStatus;
  setUser: (user: SessionUser) => void;
  expire: () => void;
  resume: (user: SessionUser) => void;
  signOut: () => void;
}

export const useSession = create<SessionState>()((set) => ({
  user: null,
  status: "active",
  setUser: (user) => set((state) => (sameUser(state.user, user) ? state : { user })),
  expire: () => set((state) => (state.status === "signed_out" ? state : { status: "expired" })),
  resume: (user) => set({ user, status: "active" }),
  signOut: () => set({ status: "signed_out" }),
}));

function sameUser(a: SessionUser | null, b: SessionUser): boolean {
  return a !== null && a.username === b.username && a.role === b.role;
}

const ORDER = ["viewer", "member", "maintainer", "admin"];

export function hasRole(user: SessionUser | null, role: "viewer" | "member" | "maintainer" | "admin"): boolean {
  if (!user) return false;
  return ORDER.indexOf(user.role) >= ORDER.indexOf(role);
}

/** May this user change the model (promote, roll back, publish, settings)? The API decides; this hides controls. */
export function canManageModel(user: SessionUser | null, owner: string): boolean {
  if (!user) return false;
  return user.role === "admin" || (user.username === owner && hasRole(user, "maintainer"));
}
