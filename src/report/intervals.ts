// The run's intervals, rebuilt from its observations (cells/<id>/observations.json, real/observations.json) and its
// config's `bootstrap` (B and seed): the CSV, the page and `compare` all read them from here, so every number they
// print comes from the folder alone. Cells written before observations existed simply have no interval.
import { join } from "node:path";
import { z } from "zod";
import type { CellObservations } from "../metrics/observations.ts";
import { DEFAULT_BOOTSTRAP } from "../stats/bootstrap.ts";
import { type RunStats, runStats } from "../stats/run-stats.ts";
import { nullsToNaN, readCellObservations, readReferenceObservations } from "./observations.ts";
import type { RunData } from "./run-folder.ts";

export interface RunIntervals extends RunStats {
  /** What the distribution metrics' features are (e.g. "eval-CLIP 64-d"), when the run says. */
  featureSpace?: string;
  /** Stats by cell id. */
  byId: Map<string, RunStats["cells"][number]>;
}

/** B and seed of the run's bootstrap: its config's `bootstrap`, else the defaults. */
export function bootstrapOf(config: unknown): { b: number; seed: number } {
  const c = (config as { bootstrap?: { b?: unknown; seed?: unknown } } | null)?.bootstrap;
  const b = typeof c?.b === "number" && Number.isInteger(c.b) && c.b > 0 ? c.b : DEFAULT_BOOTSTRAP.b;
  const seed = typeof c?.seed === "number" && Number.isInteger(c.seed) ? c.seed : DEFAULT_BOOTSTRAP.seed;
  return { b, seed };
}

const legacySchema = z.record(z.string(), z.array(z.number().nullable()));

function legacyGuideScores(raw: unknown, n: number, cell: string): Record<string, number[]> {
  const r = legacySchema.safeParse(raw);
  if (!r.success)
    throw new Error(`run folder: cells/${cell}/record.json: guideScores: expected {guide: number[]}`);
  for (const [k, v] of Object.entries(r.data))
    if (v.length !== n)
      throw new Error(
        `run folder: cells/${cell}/record.json: guideScores.${k} has ${v.length} entries for ${n} samples`,
      );
  return nullsToNaN(r.data);
}

/** Intervals of every cell that has observations; undefined when none has. `b` overrides the config's. */
export function runIntervals(
  run: RunData,
  opts: { b?: number; seed?: number } = {},
): RunIntervals | undefined {
  const cells: { id: string; obs: CellObservations }[] = [];
  for (const c of run.cells) {
    const obs = readCellObservations(join(run.dir, "cells", c.record.cellId));
    if (!obs) continue;
    // Runs before guide scores moved into the observations kept them in record.json.
    const legacy = (c.record as { guideScores?: unknown }).guideScores;
    if (!obs.guideScores && legacy)
      obs.guideScores = legacyGuideScores(legacy, obs.promptId.length, c.record.cellId);
    cells.push({ id: c.record.cellId, obs });
  }
  if (cells.length === 0) return undefined;
  const real = readReferenceObservations(join(run.dir, "real"));
  const boot = bootstrapOf(run.config);
  const stats = runStats({
    cells,
    ...(real ? { reference: real.ref } : {}),
    b: opts.b ?? boot.b,
    seed: opts.seed ?? boot.seed,
  });
  const featureSpace = real?.featureSpace;
  return {
    ...stats,
    ...(featureSpace ? { featureSpace } : {}),
    byId: new Map(stats.cells.map((c) => [c.id, c])),
  };
}
