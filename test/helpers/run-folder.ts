// Helpers shared by the sweep and run-folder tests, which both write configs into a temporary folder and compare
// results.csv files across runs.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** A writer of config files into `dir`, returning each file's path. */
export const configWriter =
  (dir: string) =>
  (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

/** results.csv without the wall-clock column, which legitimately differs between runs. */
export function csvWithoutTiming(runDir: string): string {
  const rows = readFileSync(join(runDir, "results.csv"), "utf8").trim().split("\n");
  const drop = rows[0]!.split(",").indexOf("seconds_per_image");
  assert.ok(drop >= 0, "results.csv has a seconds_per_image column");
  return rows
    .map((r) =>
      r
        .split(",")
        .filter((_, i) => i !== drop)
        .join(","),
    )
    .join("\n");
}
