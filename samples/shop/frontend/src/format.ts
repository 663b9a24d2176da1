// Pure display helpers for the shop front end (no DOM, so they run in Node tests too).

export interface Product {
  id: string;
  name: string;
  description: string;
  /** Price in integer cents, as served by the backend. */
  priceCents: number;
}

/** Format integer cents as dollars using integer arithmetic: 1999 -> "$19.99". */
export function formatPrice(cents: number): string {
  if (!Number.isSafeInteger(cents) || cents < 0) {
    throw new RangeError(`price must be a non-negative integer number of cents, got ${cents}`);
  }
  const dollars = String(Math.floor(cents / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `$${dollars}.${String(cents % 100).padStart(2, "0")}`;
}

/**
 * Products whose name or description contains every word of the query
 * (case-insensitive; a blank query keeps everything). Order is preserved.
 */
export function filterProducts(products: readonly Product[], query: string): Product[] {
  const words = query.toLowerCase().split(/\s+/).filter((w) => w !== "");
  return products.filter((p) => {
    const haystack = `${p.name} ${p.description}`.toLowerCase();
    return words.every((w) => haystack.includes(w));
  });
}

/** Text of the cart badge: "Cart is empty", "1 item", "3 items", "99+ items". */
export function cartBadgeText(count: number): string {
  if (!Number.isInteger(count) || count <= 0) return "Cart is empty";
  if (count === 1) return "1 item";
  return count > 99 ? "99+ items" : `${count} items`;
}

/** Runtime check for the untrusted /api/products response. */
export function isProductList(value: unknown): value is Product[] {
  return (
    Array.isArray(value) &&
    value.every(
      (p) =>
        typeof p === "object" && p !== null &&
        typeof p.id === "string" && typeof p.name === "string" &&
        typeof p.description === "string" && Number.isSafeInteger(p.priceCents) && p.priceCents >= 0,
    )
  );
}
