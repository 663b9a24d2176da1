import assert from "node:assert/strict";
import { it } from "node:test";

it("app module loads without a DOM and builds the products URL", async () => {
  // Importing must not throw in Node: the DOM code only runs when `document` exists.
  const app = await import("../src/app.js");
  assert.equal(typeof app.start, "function");
  assert.equal(app.productsUrl({}), "/api/products");
  assert.equal(app.productsUrl({ PUBLIC_API_BASE: "https://api.example.test/" }), "https://api.example.test/api/products");
});
