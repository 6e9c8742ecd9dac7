// Reader of a run folder (format: ./README.md). The report reads nothing else, never a live runner, so any
// finished, interrupted or merged run can be rebuilt: a cell exists once its record.json does, and merging shards
// is copying their cells/ folders together.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";

/** Metrics are numbers; `null` stands for NaN/undefined (JSON has no NaN), e.g. diversity with one sample. */
const metricValue = z.number().nullable();

const perPromptSchema = z
  .object({
    promptId: z.string(),
    text: z.string().optional(),
    suite: z.string().optional(),
    n: z.number().int().nonnegative().optional(),
    metrics: z.record(z.string(), metricValue),
  })
  .loose();

const gridSchema = z
  .object({
    /** Images per row of grid.png. */
    cols: z.number().int().positive(),
    /** Images in grid.png, row-major. */
    n: z.number().int().positive(),
    /** Side of one image in pixels (without padding). */
    size: z.number().int().positive().optional(),
    /** Seed of each image: the same across cells, so grids compare like for like. */
    seeds: z.array(z.number()).optional(),
    /** Prompt text of each image. */
    prompts: z.array(z.string()).optional(),
  })
  .loose();

export const cellRecordSchema = z
  .object({
    cellId: z.string().regex(/^[A-Za-z0-9._=+-]+$/, "cellId must be a safe folder name ([A-Za-z0-9._=+-])"),
    strategy: z.string().min(1),
    /** The strategy's config without `kind` and `scale` (those have their own fields); may nest (`base`). */
    strategyParams: z.record(z.string(), z.unknown()).default({}),
    scale: z.number(),
    steps: z.number().int().positive(),
    sampler: z.string().min(1),
    metrics: z.record(z.string(), metricValue),
    perPrompt: z.array(perPromptSchema).optional(),
    nfe: z.number().nonnegative(),
    secondsPerImage: z.number().nonnegative(),
    grid: gridSchema.optional(),
  })
  .loose();

export type CellRecord = z.infer<typeof cellRecordSchema>;

export interface RunCell {
  record: CellRecord;
  /** Path of grid.png relative to the run folder (forward slashes), when present. */
  grid?: string;
  /** Pixel size of grid.png, read from its header. */
  gridSize?: { width: number; height: number };
}

export interface RunData {
  dir: string;
  config: unknown;
  env?: Record<string, unknown>;
  /** Finished cells in canonical order (see `compareCells`). */
  cells: RunCell[];
  /** Cell folders without a record.json: still running, or interrupted. */
  pending: string[];
  real?: { info?: Record<string, unknown>; grid?: string; gridSize?: { width: number; height: number } };
}

function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new Error(`run folder: cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`run folder: ${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Width and height from a PNG's IHDR chunk, without decoding it (grids can be large). */
export function pngSize(path: string): { width: number; height: number } | undefined {
  const buf = readFileSync(path);
  if (buf.length < 24 || buf.toString("latin1", 12, 16) !== "IHDR") return undefined;
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

/** Parameters other than the strategy name and the scale, in a stable key order. */
export function paramsKey(r: CellRecord): string {
  const { kind: _k, scale: _s, ...rest } = r.strategyParams as Record<string, unknown>;
  return JSON.stringify(sortKeys(rest));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") {
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

// Code-unit order, not localeCompare: the CSV's row order must not depend on the machine's locale.
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Canonical cell order: strategy, other parameters, scale, steps, sampler, id. */
export function compareCells(a: CellRecord, b: CellRecord): number {
  return (
    cmp(a.strategy, b.strategy) ||
    cmp(paramsKey(a), paramsKey(b)) ||
    a.scale - b.scale ||
    a.steps - b.steps ||
    cmp(a.sampler, b.sampler) ||
    cmp(a.cellId, b.cellId)
  );
}

export function readRun(dir: string): RunData {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`run folder: ${dir} is not a folder`);
  const configPath = join(dir, "config.json");
  if (!existsSync(configPath)) throw new Error(`run folder: ${dir} has no config.json (is it a run folder?)`);
  const config = readJson(configPath);
  const envPath = join(dir, "env.json");
  const env = existsSync(envPath) ? (readJson(envPath) as Record<string, unknown>) : undefined;

  const cellsDir = join(dir, "cells");
  const cells: RunCell[] = [];
  const pending: string[] = [];
  const names = existsSync(cellsDir) ? readdirSync(cellsDir).sort() : [];
  for (const name of names) {
    const cellDir = join(cellsDir, name);
    if (!statSync(cellDir).isDirectory()) continue;
    const recordPath = join(cellDir, "record.json");
    if (!existsSync(recordPath)) {
      pending.push(name);
      continue;
    }
    const parsed = cellRecordSchema.safeParse(readJson(recordPath));
    if (!parsed.success) {
      const issues = parsed.error.issues
        .map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`)
        .join("; ");
      throw new Error(`run folder: ${recordPath}: ${issues}`);
    }
    const record = parsed.data;
    if (record.cellId !== name) {
      throw new Error(`run folder: ${recordPath} says cellId '${record.cellId}' but lives in cells/${name}`);
    }
    const cell: RunCell = { record };
    const gridPath = join(cellDir, "grid.png");
    if (existsSync(gridPath)) {
      cell.grid = `cells/${name}/grid.png`;
      const size = pngSize(gridPath);
      if (size) cell.gridSize = size;
    }
    cells.push(cell);
  }
  cells.sort((a, b) => compareCells(a.record, b.record));

  const run: RunData = { dir, config, cells, pending };
  if (env) run.env = env;
  const realDir = join(dir, "real");
  if (existsSync(realDir)) {
    const real: NonNullable<RunData["real"]> = {};
    const infoPath = join(realDir, "info.json");
    if (existsSync(infoPath)) real.info = readJson(infoPath) as Record<string, unknown>;
    const gridPath = join(realDir, "grid.png");
    if (existsSync(gridPath)) {
      real.grid = "real/grid.png";
      const size = pngSize(gridPath);
      if (size) real.gridSize = size;
    }
    run.real = real;
  }
  return run;
}
