import Link from "next/link";

export default function NotFound() {
  return (
    <main className="mx-auto grid max-w-md gap-3 px-4 py-16">
      <h1 className="text-2xl font-semibold">Not found</h1>
      <p className="text-sm text-muted-foreground">There is no page at this address.</p>
      <Link href="/" className="text-primary underline-offset-4 hover:underline">
        Go to the overview
      </Link>
    </main>
  );
}
