import { Skeleton } from "@/components/ui/skeleton";

export default function Loading() {
  return (
    <div className="grid grid-cols-1 gap-4" role="status" aria-busy="true" aria-label="Loading the model">
      <Skeleton className="h-8 w-56" />
      <Skeleton className="h-4 w-80" />
      <Skeleton className="h-24 w-full" />
      <Skeleton className="h-9 w-72" />
      <Skeleton className="h-48 w-full" />
    </div>
  );
}
