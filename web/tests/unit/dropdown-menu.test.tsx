import { fireEvent, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";

import { DropdownMenu, DropdownMenuContent, DropdownMenuItem, DropdownMenuRadioItem, DropdownMenuTrigger } from "@/components/ui/dropdown-menu";

function Menu({ onSignOut = () => undefined, onTheme = () => undefined }: { onSignOut?: () => void; onTheme?: () => void }) {
  return (
    <>
      <DropdownMenu>
        <DropdownMenuTrigger>Account</DropdownMenuTrigger>
        <DropdownMenuContent label="Account">
          <DropdownMenuRadioItem checked onSelect={onTheme}>
            Light
          </DropdownMenuRadioItem>
          <DropdownMenuRadioItem checked={false} onSelect={onTheme}>
            Dark
          </DropdownMenuRadioItem>
          <DropdownMenuItem onSelect={onSignOut}>Sign out</DropdownMenuItem>
        </DropdownMenuContent>
      </DropdownMenu>
      <p>outside</p>
    </>
  );
}

describe("DropdownMenu (menu button pattern)", () => {
  it("opens on click with the first item focused, and says so to assistive technology", async () => {
    render(<Menu />);
    const button = screen.getByRole("button", { name: "Account" });
    expect(button).toHaveAttribute("aria-expanded", "false");
    await userEvent.click(button);
    expect(button).toHaveAttribute("aria-expanded", "true");
    expect(screen.getByRole("menu", { name: "Account" })).toBeInTheDocument();
    expect(screen.getByRole("menuitemradio", { name: "Light" })).toHaveFocus();
    expect(screen.getByRole("menuitemradio", { name: "Light" })).toHaveAttribute("aria-checked", "true");
  });

  it("moves with the arrow keys, Home and End, wrapping around", async () => {
    render(<Menu />);
    await userEvent.click(screen.getByRole("button", { name: "Account" }));
    await userEvent.keyboard("{ArrowDown}");
    expect(screen.getByRole("menuitemradio", { name: "Dark" })).toHaveFocus();
    await userEvent.keyboard("{ArrowDown}{ArrowDown}");
    expect(screen.getByRole("menuitemradio", { name: "Light" })).toHaveFocus();
    await userEvent.keyboard("{End}");
    expect(screen.getByRole("menuitem", { name: "Sign out" })).toHaveFocus();
    await userEvent.keyboard("{Home}{ArrowUp}");
    expect(screen.getByRole("menuitem", { name: "Sign out" })).toHaveFocus();
  });

  it("closes on Escape with focus back on the button, and on a click outside", async () => {
    render(<Menu />);
    const button = screen.getByRole("button", { name: "Account" });
    await userEvent.click(button);
    await userEvent.keyboard("{Escape}");
    expect(screen.queryByRole("menu")).toBeNull();
    expect(button).toHaveFocus();
    await userEvent.click(button);
    fireEvent.pointerDown(screen.getByText("outside"));
    expect(screen.queryByRole("menu")).toBeNull();
  });

  it("opens from the keyboard and runs an item with Enter", async () => {
    const onSignOut = vi.fn();
    render(<Menu onSignOut={onSignOut} />);
    screen.getByRole("button", { name: "Account" }).focus();
    await userEvent.keyboard("{ArrowDown}");
    await userEvent.keyboard("{End}{Enter}");
    expect(onSignOut).toHaveBeenCalledOnce();
    expect(screen.queryByRole("menu")).toBeNull();
  });
});
