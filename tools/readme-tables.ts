// Rewrites the generated strategy table of README.md (between the strategy-table markers) from the registry
// (src/strategies/table.ts); `--check` only says whether it is stale (exit status 1). test/readme.test.ts fails
// when the README's copy is stale. Usage: npx tsx tools/readme-tables.ts [--check]
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { initEngine } from "../src/core/engine.ts";
import { REPO_ROOT } from "../src/core/paths.ts";
import { strategyTable } from "../src/strategies/table.ts";

const BEGIN = "<!-- strategy-table:begin -->";
const END = "<!-- strategy-table:end -->";

/** README text with the block between the markers replaced by `table`. */
export function withTable(readme: string, table: string): string {
  const a = readme.indexOf(BEGIN);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error(`README.md: no ${BEGIN} … ${END} block`);
  return `${readme.slice(0, a + BEGIN.length)}\n${table}\n${readme.slice(b)}`;
}

export const README = join(REPO_ROOT, "README.md");

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await initEngine("cpu", { quiet: true });
  const text = readFileSync(README, "utf8");
  const next = withTable(text, strategyTable());
  if (process.argv.includes("--check")) {
    process.stdout.write(next === text ? "README.md's strategy table is current\n" : "README.md's strategy table is stale\n");
    process.exitCode = next === text ? 0 : 1;
  } else if (next !== text) {
    writeFileSync(README, next);
    process.stdout.write("README.md: strategy table rewritten\n");
  }
}
