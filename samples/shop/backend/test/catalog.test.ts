import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { cartTotal, formatCents, listProducts, MAX_QUANTITY, ValidationError } from "../src/catalog";

describe("catalog", () => {
  it("lists products with unique ids and integer prices", () => {
    const products = listProducts();
    assert.ok(products.length >= 3);
    assert.equal(new Set(products.map((p) => p.id)).size, products.length);
    for (const p of products) assert.ok(Number.isSafeInteger(p.priceCents) && p.priceCents > 0, p.id);
  });

  it("returns copies so callers cannot change the catalog", () => {
    const first = listProducts();
    first[0]!.priceCents = 1;
    assert.notEqual(listProducts()[0]!.priceCents, 1);
  });

  it("formats cents without floating point errors", () => {
    assert.equal(formatCents(0), "$0.00");
    assert.equal(formatCents(5), "$0.05");
    assert.equal(formatCents(1999), "$19.99");
    assert.equal(formatCents(123456789), "$1,234,567.89");
    assert.throws(() => formatCents(-1), ValidationError);
    assert.throws(() => formatCents(1.5), ValidationError);
  });

  it("totals a valid cart", () => {
    const total = cartTotal({ items: [{ id: "mug", quantity: 2 }, { id: "sticker", quantity: 3 }] });
    assert.deepEqual(total, { totalCents: 2 * 1250 + 3 * 399, total: "$36.97", items: 5 });
    assert.deepEqual(cartTotal({ items: [] }), { totalCents: 0, total: "$0.00", items: 0 });
  });

  it("rejects negative, zero, fractional and non-numeric quantities", () => {
    for (const quantity of [-1, 0, 1.5, Number.NaN, "2", null, MAX_QUANTITY + 1]) {
      assert.throws(() => cartTotal({ items: [{ id: "mug", quantity }] }), ValidationError, String(quantity));
    }
  });

  it("rejects malformed carts and unknown products", () => {
    for (const cart of [null, 42, "items", {}, { items: "mug" }, { items: [null] }, { items: [{ quantity: 1 }] }]) {
      assert.throws(() => cartTotal(cart), ValidationError, JSON.stringify(cart));
    }
    assert.throws(() => cartTotal({ items: [{ id: "yacht", quantity: 1 }] }), /unknown product "yacht"/);
  });
});
