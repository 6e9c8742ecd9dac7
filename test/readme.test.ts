// The README as a front door: short, its strategy table current with the registry, every command it shows valid
// as written (parsed by the CLI's own parser, strict, without running) and documented (`--help`, in-process), its
// example configs valid, and every relative link in it and in docs/ pointing at a file that exists.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { before, test } from "node:test";
import { parser } from "../src/cli/parser.ts";
import { initEngine } from "../src/core/engine.ts";
import { strategyTable } from "../src/strategies/table.ts";
import { loadSweepConfig } from "../src/sweep/config.ts";
import { README, withTable } from "../tools/readme-tables.ts";

const ROOT = resolve(import.meta.dirname, "..");
const readme = readFileSync(README, "utf8");

before(async () => {
  await initEngine("cpu", { quiet: true });
});

/** Shell-like words of a command line (double quotes group; no escapes, none of the README's lines need them). */
function words(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? "");
}

/** The command lines of the README's ```sh blocks, comments dropped. */
function shellLines(md: string): string[] {
  return [...md.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((m) =>
    (m[1] ?? "")
      .split("\n")
      .map((l) => l.replace(/\s+#.*$/, "").trim())
      .filter((l) => l && !l.startsWith("#")),
  );
}

/** The guidance-lab arguments a README line runs: `npx guidance-lab …`, or an npm script that runs the CLI. */
function cliArgs(line: string): string[] | undefined {
  const w = words(line);
  if (w[0] === "npx" && w[1] === "guidance-lab") return w.slice(2);
  if (w[0] === "npm") {
    const scripts = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).scripts as Record<
      string,
      string
    >;
    const name = w[1] === "run" ? w[2] : w[1];
    const script = name ? scripts[name] : undefined;
    assert.ok(script, `README: '${line}' names no script of package.json`);
    const rest = w.slice(w[1] === "run" ? 3 : 2);
    const extra = rest[0] === "--" ? rest.slice(1) : rest;
    const cli = /^tsx src\/cli\/main\.ts(.*)$/.exec(script);
    return cli ? [...words(cli[1] ?? ""), ...extra] : undefined;
  }
  return undefined;
}

class Parsed extends Error {}

/** Parses `args` strictly, as the CLI would, and stops before the command's handler runs. */
async function validate(args: string[]): Promise<void> {
  const p = parser(args)
    .exitProcess(false)
    .fail(false)
    .middleware(() => {
      throw new Parsed();
    }, false);
  await assert.rejects(
    async () => p.parseAsync(),
    (e) => {
      if (e instanceof Parsed) return true;
      throw new Error(`guidance-lab ${args.join(" ")}: ${(e as Error).message}`);
    },
  );
}

/** `guidance-lab COMMAND --help`, in-process: the help text. */
async function help(command: string): Promise<string> {
  return new Promise((done, fail) => {
    parser([command, "--help"])
      .exitProcess(false)
      .parse([command, "--help"], {}, (err, _argv, output) => (err ? fail(err) : done(output)));
  });
}

test("README.md is at most 200 lines", () => {
  const n = readme.split("\n").length;
  assert.ok(n <= 200, `README.md has ${n} lines`);
});

test("README.md's strategy table is the registry's (npx tsx tools/readme-tables.ts rewrites it)", () => {
  assert.equal(readme, withTable(readme, strategyTable()), "README.md's strategy table is stale");
});

test("every command README.md shows parses as written and has help", async () => {
  const lines = shellLines(readme);
  assert.ok(lines.length >= 8, "README.md shows its commands in ```sh blocks");
  const setup = lines.filter((l) => l.startsWith("npm ci && "));
  assert.deepEqual(setup, ["npm ci && npm start", "npm ci && npm test"]);
  const runnable = lines.flatMap((l) => l.split(" && ")).filter((l) => l !== "npm ci");
  for (const line of runnable) {
    if (line === "npm test") {
      assert.match(
        JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).scripts.test,
        /node --import tsx --test/,
      );
      continue;
    }
    const args = cliArgs(line);
    assert.ok(args, `README: '${line}' is neither a guidance-lab command nor an npm script running one`);
    await validate(args);
    const text = await help(args[0] ?? "");
    assert.match(text, new RegExp(`guidance-lab ${args[0]}`), `${args[0]} --help`);
  }
});

test("the validation catches a wrong command (the check can fail)", async () => {
  await assert.rejects(validate(["sample", "--prompt", "x", "--strategy", "cfgg"]), /Invalid values/);
  await assert.rejects(validate(["sweep"]), /Not enough non-option arguments/);
  await assert.rejects(validate(["models", "list", "--bogus"]), /Unknown argument/);
});

test("README.md's example configs are valid sweep configs", () => {
  const configs = [...readme.matchAll(/\]\(((?:configs|experiments)\/[^)]+\.yaml)\)/g)].map(
    (m) => m[1] ?? "",
  );
  assert.ok(configs.length >= 3, "three example configs");
  for (const c of configs) loadSweepConfig(join(ROOT, c));
});

test("relative links of README.md, docs/*.md and models/README.md point at files that exist", () => {
  const files = [
    "README.md",
    "models/README.md",
    ...readdirSync(join(ROOT, "docs"))
      .filter((f) => f.endsWith(".md"))
      .map((f) => `docs/${f}`),
  ];
  const broken: string[] = [];
  for (const f of files) {
    const text = readFileSync(join(ROOT, f), "utf8");
    for (const m of text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
      const target = m[1] ?? "";
      if (/^[a-z]+:/.test(target)) continue;
      if (!existsSync(resolve(ROOT, dirname(f), target))) broken.push(`${f}: ${target}`);
    }
  }
  assert.deepEqual(broken, []);
});
