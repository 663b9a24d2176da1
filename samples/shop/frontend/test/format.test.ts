import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { cartBadgeText, filterProducts, formatPrice, isProductList, type Product } from "../src/format.js";

const products: Product[] = [
  { id: "mug", name: "Coffee mug", description: "Ceramic, 350 ml", priceCents: 1250 },
  { id: "tee", name: "T-shirt", description: "Organic cotton", priceCents: 1999 },
  { id: "cap", name: "Baseball cap", description: "Cotton twill", priceCents: 2400 },
];

describe("formatPrice", () => {
  it("formats integer cents as dollars", () => {
    assert.equal(formatPrice(0), "$0.00");
    assert.equal(formatPrice(7), "$0.07");
    assert.equal(formatPrice(1999), "$19.99");
    assert.equal(formatPrice(123456789), "$1,234,567.89");
  });

  it("rejects negative and fractional cents", () => {
    assert.throws(() => formatPrice(-1), RangeError);
    assert.throws(() => formatPrice(19.99), RangeError);
    assert.throws(() => formatPrice(Number.NaN), RangeError);
  });
});

describe("filterProducts", () => {
  it("keeps everything for a blank query", () => {
    assert.deepEqual(filterProducts(products, "   "), products);
  });

  it("matches name and description case-insensitively, all words required", () => {
    assert.deepEqual(filterProducts(products, "COTTON").map((p) => p.id), ["tee", "cap"]);
    assert.deepEqual(filterProducts(products, "cotton cap").map((p) => p.id), ["cap"]);
    assert.deepEqual(filterProducts(products, "yacht"), []);
  });
});

describe("cartBadgeText", () => {
  it("pluralises and caps the count", () => {
    assert.equal(cartBadgeText(0), "Cart is empty");
    assert.equal(cartBadgeText(-3), "Cart is empty");
    assert.equal(cartBadgeText(1), "1 item");
    assert.equal(cartBadgeText(2), "2 items");
    assert.equal(cartBadgeText(99), "99 items");
    assert.equal(cartBadgeText(100), "99+ items");
  });
});

describe("isProductList", () => {
  it("accepts the backend's shape and rejects anything else", () => {
    assert.equal(isProductList(products), true);
    assert.equal(isProductList([]), true);
    assert.equal(isProductList({ items: products }), false);
    assert.equal(isProductList([{ ...products[0], priceCents: "12.50" }]), false);
    assert.equal(isProductList([null]), false);
  });
});
