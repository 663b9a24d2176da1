import { createServer, IncomingMessage, ServerResponse } from "node:http";
import { describeDelay, Note, parseNote } from "./notes";

const notes: Note[] = [];
const version = process.env.APP_VERSION || "dev";

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<string> {
  let data = "";
  for await (const chunk of req) {
    data += chunk;
    if (data.length > 10_000) throw new Error("body too large");
  }
  return data;
}

export const server = createServer(async (req, res) => {
  if (req.method === "GET" && req.url === "/healthz") {
    return send(res, 200, { status: "ok", version });
  }
  if (req.method === "GET" && req.url === "/notes") {
    return send(res, 200, notes.map((n) => ({ ...n, reminder: describeDelay(n.remindInMs) })));
  }
  if (req.method === "POST" && req.url === "/notes") {
    try {
      const { text } = JSON.parse(await readBody(req));
      const note = parseNote(notes.length + 1, String(text ?? ""));
      notes.push(note);
      return send(res, 201, { ...note, reminder: describeDelay(note.remindInMs) });
    } catch (err) {
      return send(res, 400, { error: (err as Error).message });
    }
  }
  send(res, 404, { error: "not found" });
});

if (require.main === module) {
  const port = Number(process.env.PORT || 3000);
  server.listen(port, "0.0.0.0", () => console.log(`notes-api ${version} listening on ${port}`));
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}
