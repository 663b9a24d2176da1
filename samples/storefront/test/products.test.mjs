import test from "node:test";
import assert from "node:assert/strict";
import { price, products } from "../app/products.js";

test("prices read as dollars", () => {
  assert.equal(price(1250), "$12.50");
});

test("every product has an id and a price", () => {
  for (const p of products) {
    assert.ok(p.id && p.cents > 0);
  }
});
