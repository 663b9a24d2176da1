// Runs after `tsc` (see the "build" npm script): completes dist/ as a static site.
//   - copies public/* into dist/
//   - writes dist/healthz ("ok\n") for the container's health probe
//   - writes dist/config.json with ONLY the PUBLIC_* values of .env ({} without .env)
//
// The build server may write a `.env` file (mode 0600) here before the build. Contract: if
// `.env` exists it must contain `BUILD_TOKEN=<non-empty>`. The values of BUILD_TOKEN and of
// every other non-PUBLIC_ key are never written or printed — not even in error messages.
import { cpSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const envPath = join(root, ".env");

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
  console.error(`assemble: ${message}`);
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
  console.log("assemble: build token present");
} else {
  console.log("assemble: no .env file, config.json will be empty");
}

if (!existsSync(dist)) fail("dist/ does not exist; run tsc first");
cpSync(join(root, "public"), dist, { recursive: true });
writeFileSync(join(dist, "healthz"), "ok\n");

// Only PUBLIC_* keys are meant for the browser; everything else stays on the build server.
const config = Object.fromEntries([...env].filter(([key]) => key.startsWith("PUBLIC_")).sort());
writeFileSync(join(dist, "config.json"), JSON.stringify(config, null, 2) + "\n");
console.log(`assemble: wrote dist/ (config keys: ${Object.keys(config).join(", ") || "none"})`);
