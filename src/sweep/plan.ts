// Expanding a sweep config into cells. Ids are derived from the cell's parameters alone (never from its position),
// so shards, resumed runs and merged runs agree on them, and they are safe folder names.
import { createHash } from "node:crypto";
import { samplerDef, samplerEta } from "../core/samplers/registry.ts";
import type { ScheduleName } from "../core/samplers/sampler.ts";
import { checkStrategySampler, parseStrategyConfig, type StrategyConfig } from "../strategies/registry.ts";
import type { SamplerName, SweepConfig } from "./config.ts";

export interface Cell {
  id: string;
  /** Index of the config's strategies entry it came from (for error messages). */
  entry: number;
  /** The full parsed strategy config (defaults filled in), scale included. */
  strategy: StrategyConfig;
  scale: number;
  steps: number;
  sampler: SamplerName;
  /** The strategy config without kind and scale, as the record's `strategyParams`. */
  params: Record<string, unknown>;
}

/** JSON with sorted keys, so equal configs hash equally whatever order YAML gave them in. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

const safe = (s: string) => s.replace(/[^A-Za-z0-9._=+-]/g, "_");

/**
 * `<kind>-s<scale>-<steps>-<sampler>-<hash6>`: readable first, then a hash of every parameter (η where the sampler
 * takes one, the schedule when not the default)
 * so that two cells differing only in, say, φ still get different folders.
 */
export function cellId(
  strategy: StrategyConfig,
  steps: number,
  sampler: SamplerName,
  eta: number | undefined,
  schedule: ScheduleName = "default",
): string {
  const scale = typeof strategy.scale === "number" ? strategy.scale : 0;
  // η only for samplers that take one, and the schedule only when not the default, so ids of earlier runs hold.
  const withEta = samplerDef(sampler).eta ? { eta: samplerEta(sampler, eta) } : {};
  const withSchedule = schedule !== "default" ? { schedule } : {};
  const hash = createHash("sha256")
    .update(canonicalJson({ strategy, steps, sampler, ...withEta, ...withSchedule }))
    .digest("hex")
    .slice(0, 6);
  return safe(`${strategy.kind}-s${scale}-${steps}-${sampler}-${hash}`);
}

/** Cartesian product of the list-valued keys; `[[a, b]]` passes the array [a, b] as one value. */
function gridOf(entry: Record<string, unknown>): Record<string, unknown>[] {
  let combos: Record<string, unknown>[] = [{}];
  for (const [k, v] of Object.entries(entry)) {
    const values = Array.isArray(v) ? v : [v];
    combos = combos.flatMap((c) => values.map((x) => ({ ...c, [k]: x })));
  }
  return combos;
}

/**
 * Every cell of the config in a fixed order: strategy entries as written, their grid, scales, steps, sampler.
 * Each grid point is validated by the strategy registry, so unknown kinds and bad parameters fail here.
 */
export function planCells(config: SweepConfig, source = "sweep"): Cell[] {
  const cells: Cell[] = [];
  const seen = new Map<string, string>();
  config.strategies.forEach((entry, i) => {
    const { scales, ...rest } = entry as { scales?: number[] } & Record<string, unknown>;
    const key = `${source}: strategies.${i}`;
    if (scales !== undefined && "scale" in rest)
      throw new Error(`${key}: give either scale or scales, not both`);
    for (const point of gridOf(rest)) {
      for (const scale of scales ?? [undefined]) {
        const raw = scale === undefined ? point : { ...point, scale };
        const strategy = parseStrategyConfig(raw, key);
        const { kind: _k, scale: s, ...params } = strategy;
        for (const steps of config.steps) {
          for (const sampler of config.sampler) {
            checkStrategySampler(strategy, sampler, config.eta, `${key}: sampler`);
            const id = cellId(strategy, steps, sampler, config.eta, config.schedule);
            const what = `${JSON.stringify(raw)}, ${steps} ${sampler} steps`;
            const dup = seen.get(id);
            if (dup)
              throw new Error(`${key}: the cell ${what} is also given as ${dup} (duplicate cell '${id}')`);
            seen.set(id, what);
            cells.push({
              id,
              entry: i,
              strategy,
              scale: typeof s === "number" ? s : 0,
              steps,
              sampler,
              params,
            });
          }
        }
      }
    }
  });
  if (!cells.length) throw new Error(`${source}: strategies: the grid is empty`);
  return cells;
}

export interface Shard {
  /** 1-based. */
  index: number;
  count: number;
}

export function parseShard(text: string): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = m ? Number(m[1]) : Number.NaN;
  const count = m ? Number(m[2]) : Number.NaN;
  if (!m || count < 1 || index < 1 || index > count) {
    throw new Error(`--shard ${text}: expected i/n with 1 ≤ i ≤ n (e.g. 2/3)`);
  }
  return { index, count };
}

/**
 * Round-robin over the planned order: shards get near-equal numbers of cells and neighbouring cells (same
 * strategy, similar cost) are spread over shards, so shards finish at about the same time.
 */
export function shardCells<T>(cells: readonly T[], shard: Shard | undefined): T[] {
  if (!shard) return [...cells];
  return cells.filter((_, i) => i % shard.count === shard.index - 1);
}
