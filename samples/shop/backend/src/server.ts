// Shop backend: a small JSON API on node:http, no runtime dependencies.
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { join } from "node:path";

import { cartTotal, listProducts, ValidationError } from "./catalog";

/** Largest request body accepted, in bytes. */
const MAX_BODY_BYTES = 16 * 1024;

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export interface AppOptions {
  /** Reported by /healthz; defaults to $APP_VERSION or "dev". */
  version?: string;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(payload),
    "cache-control": "no-store",
    // Read-only product data may be fetched by the static front end from another origin.
    "access-control-allow-origin": "*",
  });
  res.end(payload);
}

async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  const type = req.headers["content-type"] ?? "";
  if (!type.toLowerCase().startsWith("application/json")) {
    throw new HttpError(415, "content-type must be application/json");
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `body larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new HttpError(400, "body is not valid JSON");
  }
}

async function route(req: IncomingMessage, res: ServerResponse, version: string): Promise<void> {
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  const method = req.method ?? "GET";
  const routes: Record<string, Partial<Record<string, () => Promise<void> | void>>> = {
    "/healthz": { GET: () => sendJson(res, 200, { status: "ok", version }) },
    "/api/products": { GET: () => sendJson(res, 200, listProducts()) },
    "/api/cart/total": {
      POST: async () => sendJson(res, 200, cartTotal(await readJsonBody(req))),
    },
  };
  const handlers = routes[path];
  if (handlers === undefined) throw new HttpError(404, `no route for ${path}`);
  const handler = handlers[method] ?? (method === "HEAD" ? handlers.GET : undefined);
  if (handler === undefined) {
    res.setHeader("allow", Object.keys(handlers).join(", "));
    throw new HttpError(405, `${method} not allowed on ${path}`);
  }
  await handler();
}

/** Create the HTTP server (not yet listening), so tests can listen on an ephemeral port. */
export function createApp(options: AppOptions = {}): Server {
  const version = options.version ?? process.env.APP_VERSION ?? "dev";
  return createServer((req, res) => {
    route(req, res, version).catch((err: unknown) => {
      if (err instanceof ValidationError) {
        sendJson(res, 400, { error: err.message });
      } else if (err instanceof HttpError) {
        sendJson(res, err.status, { error: err.message });
      } else {
        console.error("unhandled error:", err);
        if (!res.headersSent) sendJson(res, 500, { error: "internal error" });
        else res.destroy();
      }
    });
  });
}

/** build-info.json is written next to server.js by scripts/write-build-info.mjs; optional at run time. */
function buildInfo(): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(join(__dirname, "build-info.json"), "utf8")) as Record<string, unknown>;
  } catch {
    return {};
  }
}

function main(): void {
  const port = Number.parseInt(process.env.PORT ?? "8080", 10);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`invalid PORT ${JSON.stringify(process.env.PORT)}`);
    process.exit(2);
  }
  const server = createApp();
  server.listen(port, "0.0.0.0", () => {
    console.log(`shop backend listening on 0.0.0.0:${port}`, JSON.stringify(buildInfo()));
  });
  // Graceful stop for `docker stop` / Kubernetes: stop accepting, finish in-flight requests, exit 0.
  const stop = (signal: string) => {
    console.log(`${signal} received, shutting down`);
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    // Do not wait forever for slow keep-alive clients.
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

if (require.main === module) {
  main();
}
