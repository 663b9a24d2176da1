import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";

import { createApp } from "../src/server";

describe("HTTP server", () => {
  const server = createApp({ version: "1.2.3-test" });
  let base = "";

  before(async () => {
    // Port 0: the OS picks a free ephemeral port, so tests never clash.
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections(); // fetch keeps connections alive
    await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  });

  it("GET /healthz reports ok and the version", async () => {
    const res = await fetch(`${base}/healthz`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
    assert.deepEqual(await res.json(), { status: "ok", version: "1.2.3-test" });
  });

  it("GET /api/products returns the catalog", async () => {
    const res = await fetch(`${base}/api/products`);
    assert.equal(res.status, 200);
    const products = (await res.json()) as Array<{ id: string; priceCents: number }>;
    assert.ok(products.some((p) => p.id === "mug" && p.priceCents === 1250));
  });

  it("POST /api/cart/total totals a cart or answers 400", async () => {
    const post = (body: string) =>
      fetch(`${base}/api/cart/total`, { method: "POST", headers: { "content-type": "application/json" }, body });
    const ok = await post(JSON.stringify({ items: [{ id: "tee", quantity: 2 }] }));
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { totalCents: 3998, total: "$39.98", items: 2 });

    const negative = await post(JSON.stringify({ items: [{ id: "tee", quantity: -2 }] }));
    assert.equal(negative.status, 400);
    assert.match(((await negative.json()) as { error: string }).error, /quantity/);

    const broken = await post("{not json");
    assert.equal(broken.status, 400);
  });

  it("answers 404 and 405 with JSON errors", async () => {
    const missing = await fetch(`${base}/nope`);
    assert.equal(missing.status, 404);
    assert.ok(((await missing.json()) as { error: string }).error);
    const wrongMethod = await fetch(`${base}/api/products`, { method: "DELETE" });
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get("allow"), "GET");
    await wrongMethod.body?.cancel();
  });
});
