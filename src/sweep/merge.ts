// `guidance-lab merge OUT SHARD...`: one run folder from shards of the same config. Cell ids come from the cells'
// parameters, so shards never collide unless they ran the same cell; such a duplicate is accepted only when its
// record is identical apart from timings (e.g. a cell re-run after a crash on another machine).
//
// Nothing is mixed silently: every shard must have the same config and the same provenance (model weights and
// model.json by content hash, commit, package versions), every record the provenance of its shard, and the merged
// set must hold every planned cell unless `partial` is asked for. The output is built in a temporary folder beside
// OUT and renamed into place, so a merge that fails (or is killed) leaves OUT as it was.
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { type BuiltReport, buildReport } from "../report/index.ts";
import type { SweepConfig } from "./config.ts";
import { LOCK_FILE } from "./lock.ts";
import { canonicalJson, planCells } from "./plan.ts";
import { asProvenance, type Provenance, provenanceDiff } from "./provenance.ts";
import { readRecord } from "./records.ts";

export interface MergeResult extends BuiltReport {
  out: string;
  copied: number;
  duplicates: number;
  /** Planned cells no shard finished (only with `partial`). */
  missing: string[];
}

export interface MergeOptions {
  /** Accept a set of shards that does not cover every planned cell (the report then lists them as pending). */
  partial?: boolean;
}

const readJson = (path: string): unknown => {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`merge: ${path} is not valid JSON: ${(e as Error).message}`);
  }
};

/** A record without what legitimately differs between two runs of one cell. */
function comparable(record: unknown): string {
  const {
    timings: _t,
    secondsPerImage: _s,
    provenance: _p,
    metrics,
    ...rest
  } = record as Record<string, unknown>;
  const { seconds_per_image: _m, ...m } = (metrics ?? {}) as Record<string, unknown>;
  return canonicalJson({ ...rest, metrics: m });
}

function provenanceOf(dir: string): Provenance {
  const envPath = join(dir, "env.json");
  if (!existsSync(envPath)) throw new Error(`merge: ${dir} has no env.json, so no provenance to check`);
  const p = asProvenance((readJson(envPath) as { provenance?: unknown }).provenance);
  if (!p)
    throw new Error(
      `merge: ${envPath} records no provenance (made before provenance was recorded): its cells cannot be shown to come from the same models and code`,
    );
  return p;
}

export function mergeRuns(
  outDir: string,
  shardDirs: readonly string[],
  opts: MergeOptions = {},
): MergeResult {
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
  const first = provenanceOf(shardDirs[0]!);
  for (const dir of shardDirs.slice(1)) {
    const diffs = provenanceDiff(first, provenanceOf(dir));
    if (diffs.length)
      throw new Error(
        `merge: ${dir} was sampled with different inputs than ${shardDirs[0]}: ${diffs.join("; ")}`,
      );
  }
  if (existsSync(outDir) && readdirSync(outDir).length > 0)
    throw new Error(`merge: ${outDir} is not empty: merge into a new folder (the shards stay untouched)`);

  // Every finished record of every shard, validated, before anything is written.
  const sources = new Map<string, { dir: string; record: unknown }>();
  let duplicates = 0;
  for (const dir of shardDirs) {
    const cellsDir = join(dir, "cells");
    if (!existsSync(cellsDir)) continue;
    for (const id of readdirSync(cellsDir).sort()) {
      const r = readRecord(dir, id);
      if (r.state === "missing") continue; // unfinished in that shard
      if (r.state === "invalid") throw new Error(`merge: ${r.why}`);
      const diffs = provenanceDiff(first, asProvenance(r.record.provenance)!);
      if (diffs.length)
        throw new Error(
          `merge: ${join(cellsDir, id)} was sampled with different inputs: ${diffs.join("; ")}`,
        );
      const seen = sources.get(id);
      if (seen) {
        if (comparable(seen.record) !== comparable(r.record)) {
          throw new Error(
            `merge: cell ${id} is in more than one shard with different results (${join(cellsDir, id)} vs ${join(seen.dir, "cells", id)})`,
          );
        }
        duplicates++;
        continue;
      }
      sources.set(id, { dir, record: r.record });
    }
  }
  const planned = planCells(JSON.parse(config!) as SweepConfig, join(shardDirs[0]!, "config.json")).map(
    (c) => c.id,
  );
  const missing = planned.filter((id) => !sources.has(id));
  const unplanned = [...sources.keys()].filter((id) => !planned.includes(id));
  if (unplanned.length)
    throw new Error(`merge: cell(s) ${unplanned.join(", ")} are not cells of the shards' config.json`);
  if (missing.length && !opts.partial) {
    const shardsSeen = shardDirs
      .map((d) =>
        existsSync(join(d, "env.json"))
          ? (readJson(join(d, "env.json")) as { shard?: string }).shard
          : undefined,
      )
      .filter((s): s is string => typeof s === "string");
    const count = shardsSeen.length ? Number(shardsSeen[0]!.split("/")[1]) : 0;
    const absent = count
      ? Array.from({ length: count }, (_, i) => `${i + 1}/${count}`).filter((s) => !shardsSeen.includes(s))
      : [];
    throw new Error(
      `merge: ${missing.length} of ${planned.length} planned cells are in no shard (${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", ..." : ""})` +
        `${absent.length ? `; shard(s) ${absent.join(", ")} not given` : "; some shards are unfinished (continue them with --resume)"}` +
        ". Pass --partial to merge what there is",
    );
  }

  const parent = dirname(outDir);
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `.${basename(outDir)}.merge-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  try {
    mkdirSync(join(tmp, "cells"), { recursive: true });
    writeFileSync(join(tmp, "config.json"), readFileSync(join(shardDirs[0]!, "config.json")));
    const envs: unknown[] = [];
    for (const dir of shardDirs) {
      envs.push(readJson(join(dir, "env.json")));
      const realDir = join(dir, "real");
      if (existsSync(realDir) && !existsSync(join(tmp, "real")))
        cpSync(realDir, join(tmp, "real"), { recursive: true });
    }
    for (const [id, { dir }] of sources) {
      const from = join(dir, "cells", id);
      mkdirSync(join(tmp, "cells", id));
      for (const f of readdirSync(from)) {
        if (!f.includes(".tmp-") && f !== LOCK_FILE) cpSync(join(from, f), join(tmp, "cells", id, f));
      }
    }
    writeFileSync(
      join(tmp, "env.json"),
      `${JSON.stringify(
        {
          ...(envs[0] as object),
          provenance: first,
          mergedFrom: [...shardDirs],
          ...(missing.length ? { partial: true, missing } : {}),
          shards: envs,
        },
        null,
        2,
      )}\n`,
    );
    // An empty OUT (checked above) may exist; rename needs it gone (rmdir refuses if it filled up meanwhile).
    if (existsSync(outDir)) rmdirSync(outDir);
    renameSync(tmp, outDir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  // The report names the folder it is in, so it is built in place (from records validated above).
  const report = buildReport(outDir);
  return {
    ...report,
    out: outDir,
    copied: sources.size,
    duplicates,
    missing,
  };
}
