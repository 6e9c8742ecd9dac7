// `guidance-lab merge OUT SHARD...`: one run folder from shards of the same config. Cell ids come from the cells'
// parameters, so shards never collide unless they ran the same cell; such a duplicate is accepted only when its
// record is identical apart from timings (e.g. a cell re-run after a crash on another machine).
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type BuiltReport, buildReport } from "../report/index.ts";
import { canonicalJson } from "./plan.ts";

export interface MergeResult extends BuiltReport {
  out: string;
  copied: number;
  duplicates: number;
}

const readJson = (path: string): unknown => JSON.parse(readFileSync(path, "utf8"));

/** A record without what legitimately differs between two runs of one cell. */
function comparable(record: unknown): string {
  const { timings: _t, secondsPerImage: _s, metrics, ...rest } = record as Record<string, unknown>;
  const { seconds_per_image: _m, ...m } = (metrics ?? {}) as Record<string, unknown>;
  return canonicalJson({ ...rest, metrics: m });
}

export function mergeRuns(outDir: string, shardDirs: readonly string[]): MergeResult {
  if (!shardDirs.length) throw new Error("merge: no shard folders given");
  let config: string | undefined;
  for (const dir of shardDirs) {
    const path = join(dir, "config.json");
    if (!existsSync(path)) throw new Error(`merge: ${dir} has no config.json (is it a run folder?)`);
    const c = canonicalJson(readJson(path));
    if (config === undefined) config = c;
    else if (c !== config)
      throw new Error(
        `merge: ${path} differs from ${join(shardDirs[0]!, "config.json")}: shards of different sweeps`,
      );
  }
  const outConfig = join(outDir, "config.json");
  if (existsSync(outConfig) && canonicalJson(readJson(outConfig)) !== config) {
    throw new Error(`merge: ${outDir} already holds a run of a different config`);
  }
  mkdirSync(join(outDir, "cells"), { recursive: true });
  writeFileSync(outConfig, readFileSync(join(shardDirs[0]!, "config.json")));

  let copied = 0;
  let duplicates = 0;
  const envs: unknown[] = [];
  for (const dir of shardDirs) {
    const envPath = join(dir, "env.json");
    if (existsSync(envPath)) envs.push(readJson(envPath));
    const realDir = join(dir, "real");
    if (existsSync(realDir) && !existsSync(join(outDir, "real")))
      cpSync(realDir, join(outDir, "real"), { recursive: true });
    const cellsDir = join(dir, "cells");
    if (!existsSync(cellsDir)) continue;
    for (const id of readdirSync(cellsDir).sort()) {
      const record = join(cellsDir, id, "record.json");
      if (!existsSync(record)) continue; // unfinished in that shard
      const target = join(outDir, "cells", id);
      const existing = join(target, "record.json");
      if (existsSync(existing)) {
        if (comparable(readJson(existing)) !== comparable(readJson(record))) {
          throw new Error(
            `merge: cell ${id} is in more than one shard with different results (${record} vs ${existing})`,
          );
        }
        duplicates++;
        continue;
      }
      // Copy grid first and the record last, as the runner does, so an interrupted merge leaves no false cell.
      mkdirSync(target, { recursive: true });
      for (const f of readdirSync(join(cellsDir, id))) {
        if (f !== "record.json" && !f.includes(".tmp-")) cpSync(join(cellsDir, id, f), join(target, f));
      }
      cpSync(record, `${existing}.tmp-${process.pid}`);
      renameSync(`${existing}.tmp-${process.pid}`, existing);
      copied++;
    }
  }
  writeFileSync(
    join(outDir, "env.json"),
    `${JSON.stringify({ ...(envs[0] as object), mergedFrom: [...shardDirs], shards: envs }, null, 2)}\n`,
  );
  const report = buildReport(outDir);
  return { ...report, out: outDir, copied, duplicates };
}
