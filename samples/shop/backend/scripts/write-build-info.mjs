// Runs after `tsc` (see the "build" npm script) and writes dist/build-info.json.
//
// The build server may write a `.env` file (mode 0600) into this directory before the build.
// Contract: if `.env` exists it must contain `BUILD_TOKEN=<non-empty>`; only PUBLIC_* values may
// end up in the build output. The value of BUILD_TOKEN (or of any other non-PUBLIC_ key) is
// never written or printed — not even in error messages.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const envPath = join(root, ".env");
const outPath = join(root, "dist", "build-info.json");

/** Parse KEY=VALUE lines (blank lines, `#` comments, `export ` prefixes and quotes allowed). */
function parseEnv(text) {
  const values = new Map();
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$/.exec(line);
    // Report only the line number: the line itself may hold a secret.
    if (!match) throw new Error(`.env line ${index + 1} is not KEY=VALUE`);
    let value = match[2].trim();
    if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.at(-1) === value[0]) {
      value = value.slice(1, -1);
    }
    values.set(match[1], value);
  });
  return values;
}

function fail(message) {
  console.error(`write-build-info: ${message}`);
  process.exit(1);
}

let env = new Map();
if (existsSync(envPath)) {
  try {
    env = parseEnv(readFileSync(envPath, "utf8"));
  } catch (err) {
    fail(err instanceof Error ? err.message : "cannot read .env");
  }
  if (!env.get("BUILD_TOKEN")) {
    fail(".env exists but has no non-empty BUILD_TOKEN=... line; the build server must provide it");
  }
  console.log("write-build-info: build token present");
} else {
  console.log("write-build-info: no .env file, using defaults");
}

const info = {
  commit: process.env.OPSFLOW_COMMIT || "unknown",
  apiName: env.get("PUBLIC_API_NAME") || "shop",
};
if (!existsSync(dirname(outPath))) fail("dist/ does not exist; run tsc first");
writeFileSync(outPath, JSON.stringify(info, null, 2) + "\n");
console.log(`write-build-info: wrote dist/build-info.json (commit ${info.commit}, apiName ${info.apiName})`);
