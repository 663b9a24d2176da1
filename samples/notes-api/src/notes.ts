import ms from "ms";

export interface Note {
  id: number;
  text: string;
  remindInMs: number | null;
}

/** Parses "buy milk in 2h" into a note with a reminder delay (ms parses the duration). */
export function parseNote(id: number, input: string): Note {
  const text = input.trim();
  if (!text) {
    throw new Error("a note needs some text");
  }
  const match = /^(.*)\s+in\s+(\d+\s*[a-z]+)$/i.exec(text);
  if (!match) {
    return { id, text, remindInMs: null };
  }
  const delay = ms(match[2].replace(/\s+/g, "") as ms.StringValue);
  if (typeof delay !== "number" || Number.isNaN(delay)) {
    return { id, text, remindInMs: null };
  }
  return { id, text: match[1], remindInMs: delay };
}

/** "in 2h" as the API shows it back. */
export function describeDelay(delay: number | null): string {
  return delay === null ? "no reminder" : `in ${ms(delay, { long: true })}`;
}
