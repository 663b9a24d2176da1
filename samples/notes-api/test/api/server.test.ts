import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { AddressInfo } from "node:net";
import { server } from "../../src/server";

describe("notes API", () => {
  let base = "";
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("answers its health check", async () => {
    const res = await fetch(`${base}/healthz`);
    assert.equal(res.status, 200);
  });

  it("stores a note with a reminder", async () => {
    const res = await fetch(`${base}/notes`, { method: "POST", body: JSON.stringify({ text: "stand up in 15m" }) });
    assert.equal(res.status, 201);
    assert.equal((await res.json()).reminder, "in 15 minutes");
  });
});
