// Pure catalog logic: no I/O, so it is easy to test and reuse.

export interface Product {
  id: string;
  name: string;
  description: string;
  /** Price in integer cents, never a float. */
  priceCents: number;
}

export interface CartLine {
  id: string;
  quantity: number;
}

export interface CartTotal {
  totalCents: number;
  total: string;
  items: number;
}

/** Raised for invalid input; the server maps it to HTTP 400. */
export class ValidationError extends Error {
  override name = "ValidationError";
}

/** Upper bound for one line's quantity, so totals stay far below Number.MAX_SAFE_INTEGER. */
export const MAX_QUANTITY = 1000;

const PRODUCTS: readonly Product[] = Object.freeze([
  { id: "mug", name: "Coffee mug", description: "Ceramic, 350 ml, dishwasher safe", priceCents: 1250 },
  { id: "tee", name: "T-shirt", description: "Organic cotton, unisex fit", priceCents: 1999 },
  { id: "sticker", name: "Sticker pack", description: "Five vinyl stickers", priceCents: 399 },
  { id: "cap", name: "Baseball cap", description: "Adjustable, embroidered logo", priceCents: 2400 },
].map((p) => Object.freeze(p)));

/** The product list (a copy, so callers cannot change the catalog). */
export function listProducts(): Product[] {
  return PRODUCTS.map((p) => ({ ...p }));
}

export function findProduct(id: string): Product | undefined {
  return PRODUCTS.find((p) => p.id === id);
}

/** Format integer cents as dollars with integer arithmetic only: 1999 -> "$19.99". */
export function formatCents(cents: number): string {
  if (!Number.isSafeInteger(cents) || cents < 0) {
    throw new ValidationError(`price must be a non-negative integer number of cents, got ${cents}`);
  }
  const dollars = Math.floor(cents / 100).toLocaleString("en-US");
  return `$${dollars}.${String(cents % 100).padStart(2, "0")}`;
}

/**
 * Validate an untrusted cart (parsed JSON) and compute its total.
 *
 * Expects `{"items": [{"id": "mug", "quantity": 2}, ...]}`. Quantities must be integers
 * from 1 to MAX_QUANTITY; negative, zero, fractional or non-numeric quantities and unknown
 * product ids are rejected with a ValidationError.
 */
export function cartTotal(cart: unknown): CartTotal {
  if (typeof cart !== "object" || cart === null || !Array.isArray((cart as { items?: unknown }).items)) {
    throw new ValidationError('body must be an object like {"items": [{"id": "mug", "quantity": 1}]}');
  }
  const lines = (cart as { items: unknown[] }).items;
  let totalCents = 0;
  let items = 0;
  lines.forEach((line, index) => {
    if (typeof line !== "object" || line === null) {
      throw new ValidationError(`items[${index}] must be an object`);
    }
    const { id, quantity } = line as Partial<Record<keyof CartLine, unknown>>;
    if (typeof id !== "string") {
      throw new ValidationError(`items[${index}].id must be a string`);
    }
    const product = findProduct(id);
    if (product === undefined) {
      throw new ValidationError(`items[${index}]: unknown product ${JSON.stringify(id)}`);
    }
    if (typeof quantity !== "number" || !Number.isInteger(quantity) || quantity < 1 || quantity > MAX_QUANTITY) {
      throw new ValidationError(`items[${index}].quantity must be an integer from 1 to ${MAX_QUANTITY}`);
    }
    totalCents += product.priceCents * quantity;
    items += quantity;
  });
  return { totalCents, total: formatCents(totalCents), items };
}
