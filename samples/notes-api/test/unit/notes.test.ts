import test from "node:test";
import assert from "node:assert/strict";
import { describeDelay, parseNote } from "../../src/notes";

test("a note without a reminder", () => {
  assert.deepEqual(parseNote(1, "buy milk"), { id: 1, text: "buy milk", remindInMs: null });
});

test("a reminder in two hours", () => {
  assert.equal(parseNote(2, "call Ana in 2h").remindInMs, 2 * 60 * 60 * 1000);
});

test("delays read back in words", () => {
  assert.equal(describeDelay(90_000), "in 2 minutes");
  assert.equal(describeDelay(null), "no reminder");
});
