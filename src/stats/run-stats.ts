// Every metric of every cell with its 95% interval, from the cells' observations alone. One loop over bootstrap
// replicates serves all cells, so each replicate's prompt draws (and the reference set's Gaussian, resampled with
// the same draws) are shared, and a difference between two cells' replicate values is a paired replicate of the
// difference. Accuracies also get Wilson intervals (the cell's interval); their replicates serve comparisons. The
// Inception score's replicates come from a within-prompt bootstrap instead (see prepareCell), with the same draws
// for every cell too.
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { ATTRIBUTES } from "../data/oracle.ts";
import type { CellObservations, ReferenceObservations } from "../metrics/observations.ts";
import { rows } from "../metrics/observations.ts";
import { wilsonInterval } from "../metrics/prompt-accuracy.ts";
import {
  type BootstrapPlan,
  bootstrapInterval,
  bootstrapPlan,
  DEFAULT_BOOTSTRAP,
  identityWeights,
  replicate,
  type WithinPlan,
  withinGroupPlan,
  withinReplicate,
} from "./bootstrap.ts";
import {
  crossTerm,
  factor,
  frechet,
  GroupSeries,
  IsSums,
  insideManifold,
  kernelGroupSums,
  MeanSeries,
  MomentSums,
  type SelfKernel,
  selfKernel,
  uTerm,
  type Weights,
} from "./estimators.ts";

export interface MetricStat {
  value: number;
  lo: number;
  hi: number;
  /** Samples behind the value (real samples for recall). */
  n: number;
  /**
   * Wilson for accuracies; the bootstrap's basic interval for the small-N-biased FD and IS (IS from the
   * within-prompt bootstrap); else the percentile interval.
   */
  method: "wilson" | "percentile" | "basic";
}

/** Metrics biased at small N, whose intervals (and differences' intervals) use the basic bootstrap interval. */
export const BIASED_METRICS: ReadonlySet<string> = new Set(["fd", "is"]);

/** Where the population value cannot go (a distance is ≥ 0): basic intervals are cut there. */
const FLOOR: Readonly<Record<string, number>> = { fd: 0, is: 1 };

/** Stats key of a guide's own score (observations' `guideScores`): not a metric column, an input to guide gains. */
export const guideScoreKey = (guide: string) => `guide_score:${guide}`;

export const intervalMethod = (key: string): "percentile" | "basic" =>
  BIASED_METRICS.has(key) ? "basic" : "percentile";

export interface CellStats {
  id: string;
  /** Samples in the cell. */
  n: number;
  stats: Record<string, MetricStat>;
  /** Bootstrap replicates per metric key (length B), paired across cells. */
  reps: Record<string, Float64Array>;
  /** Oracle verdict per sample (for McNemar), when observed. */
  correct?: boolean[];
}

export interface RunStats {
  b: number;
  seed: number;
  /** Prompt ids, in group order. */
  groups: string[];
  cells: CellStats[];
  /** Real-vs-real FD and KID at the run's own N: what a perfect sampler would score. */
  floor?: { n: number; stats: Record<string, MetricStat>; reps: Record<string, Float64Array> };
}

export interface RunStatsInput {
  cells: readonly { id: string; obs: CellObservations }[];
  reference?: ReferenceObservations;
  b?: number;
  seed?: number;
  /** Neighbours for precision/recall (the registry's default 3). */
  k?: number;
  /**
   * Half the replicates on a second thread: "auto" where the loop would take more than a few seconds and a second
   * core exists, "off", or "force" (tests). The results are the same.
   */
  threads?: "auto" | "off" | "force";
}

type Estimator = (w: Weights, ctx: ReplicateContext) => number;

interface ReplicateContext {
  ref?: ReturnType<typeof factor>;
  refSelf?: number;
  /** The within-prompt bootstrap's sample-slot counts of this replicate (absent at the observed data). */
  within?: Int32Array;
}

/** The within-prompt plan's layout: samples per group and each group's first slot. */
type WithinLayout = Pick<WithinPlan, "sizes" | "offsets">;

interface Prepared {
  id: string;
  n: number;
  estimators: Map<string, Estimator>;
  /** Keys with Wilson intervals: [correct count, n]. */
  wilson: Map<string, [number, number]>;
  counts: Map<string, number>;
  correct?: boolean[];
}

function groupIndex(ids: readonly string[], index: Map<string, number>): Int32Array {
  return Int32Array.from(ids, (id) => {
    let k = index.get(id);
    if (k === undefined) {
      k = index.size;
      index.set(id, k);
    }
    return k;
  });
}

/** Samples per group of a cell's group indices. */
function groupSizes(groups: Int32Array, g: number): number[] {
  const sizes = new Array<number>(g).fill(0);
  for (const k of groups) sizes[k]!++;
  return sizes;
}

/**
 * Each sample's slot in the within-prompt plan (its group's first slot plus its order within the group), or
 * undefined when the cell's samples per group are not the plan's: its within-prompt replicates are then NaN, and
 * it gets no such interval rather than an unpaired one.
 */
function withinSlots(groups: Int32Array, within: WithinLayout): Int32Array | undefined {
  const sizes = groupSizes(groups, within.sizes.length);
  if (sizes.some((n, k) => n !== within.sizes[k])) return undefined;
  const seen = new Int32Array(sizes.length);
  return Int32Array.from(groups, (k) => within.offsets[k]! + seen[k]!++);
}

function prepareCell(
  id: string,
  obs: CellObservations,
  index: Map<string, number>,
  g: number,
  reference:
    | { data: Float32Array; groups: Int32Array; d: number; self: SelfKernel; rows: Float32Array[] }
    | undefined,
  k: number,
  within: WithinLayout,
): Prepared {
  const groups = groupIndex(obs.promptId, index);
  const n = obs.promptId.length;
  const est = new Map<string, Estimator>();
  const wilson = new Map<string, [number, number]>();
  const counts = new Map<string, number>();
  const mean = (key: string, values: ArrayLike<number>) => {
    const s = new MeanSeries(values, groups, g);
    est.set(key, (w) => s.at(w));
    counts.set(key, s.n);
    return s;
  };
  for (const [key, vals] of [
    ["clip_score", obs.clipScore],
    ["clip_score_guidance", obs.clipScoreGuidance],
  ] as const) {
    if (!vals) continue;
    const s = mean(key, vals);
    est.set(`${key}_torchmetrics`, (w) => Math.max(0, s.at(w)));
    counts.set(`${key}_torchmetrics`, s.n);
  }
  for (const [key, per] of [
    ["diversity_clip", obs.diversityClip],
    ["diversity_pixel", obs.diversityPixel],
  ] as const) {
    if (!per) continue;
    const v = new Float64Array(g).fill(Number.NaN);
    for (const [pid, x] of Object.entries(per)) {
      const gi = index.get(pid);
      if (gi !== undefined && x !== null) v[gi] = x;
    }
    const s = new GroupSeries(v);
    est.set(key, (w) => s.at(w));
    counts.set(key, n);
  }
  for (const [name, vals] of Object.entries(obs.guideScores ?? {})) mean(guideScoreKey(name), vals);
  if (obs.classProbs) {
    // The Inception score's replicates come from the within-prompt bootstrap (bootstrap.ts withinGroupPlan): its
    // marginal p(y) is the prompt mix's class mix, so a prompt resampling that draws some prompts twice and others
    // not at all has fewer classes and a lower IS whatever the samples. The shift exceeded the spread: on the
    // 840-per-cell glide-fig6 rerun (21 prompts) the prompt bootstrap's basic interval of every cell excluded its
    // own estimate (IS 18.1, "interval" [21.9, 26.9]). Resampling samples within each prompt keeps the mix; the
    // interval is conditional on the run's prompts, where the other metrics' intervals also cover their variation.
    const s = new IsSums(obs.classProbs.data, obs.classProbs.dim, groups, g);
    const slotOf = withinSlots(groups, within);
    est.set("is", (w, ctx) =>
      !ctx.within ? s.at(w) : slotOf ? s.atSamples(ctx.within, slotOf) : Number.NaN,
    );
    counts.set("is", n);
  }
  if (obs.correct) {
    const binary = (key: string, pass: (i: number) => boolean | null) => {
      const v = Float64Array.from(obs.correct!, (_, i) => {
        const p = pass(i);
        return p === null ? Number.NaN : p ? 1 : 0;
      });
      const s = mean(key, v);
      let c = 0;
      for (const x of v) if (x === 1) c++;
      if (s.n > 0) wilson.set(key, [c, s.n]);
    };
    binary("accuracy", (i) => obs.correct![i]!);
    if (obs.failed)
      for (const a of ATTRIBUTES) binary(`accuracy_attr_${a}`, (i) => !obs.failed![i]!.includes(a));
    if (obs.suite) {
      for (const suite of new Set(obs.suite.filter((s): s is string => s !== null))) {
        binary(`accuracy_suite_${suite}`, (i) => (obs.suite![i] === suite ? obs.correct![i]! : null));
      }
    }
  }
  if (obs.features && reference) {
    const { d } = reference;
    if (obs.features.dim !== d)
      throw new Error(`stats: cell ${id} features are ${obs.features.dim}-d, real ${d}-d`);
    const m = new MomentSums(obs.features.data, d, groups, g);
    est.set("fd", (w, ctx) => frechet(ctx.ref!, m.gaussian(w)));
    counts.set("fd", n);
    const self = selfKernel(obs.features.data, groups, d, g);
    const cross = kernelGroupSums(obs.features.data, groups, reference.data, reference.groups, d, g);
    est.set(
      "kid",
      (w, ctx) =>
        uTerm(self, w) + (ctx.refSelf ?? Number.NaN) - 2 * crossTerm(cross, self.cnt, reference.self.cnt, w),
    );
    counts.set("kid", n);
    if (n > k && reference.rows.length > k) {
      const gen = rows(obs.features);
      const precision = new MeanSeries(insideManifold(gen, reference.rows, k), groups, g);
      const recall = new MeanSeries(insideManifold(reference.rows, gen, k), reference.groups, g);
      est.set("precision", (w) => precision.at(w));
      counts.set("precision", n);
      est.set("recall", (w) => recall.at(w));
      counts.set("recall", reference.rows.length);
    }
  }
  return {
    id,
    n,
    estimators: est,
    wilson,
    counts,
    ...(obs.correct ? { correct: obs.correct } : {}),
  };
}

/** What the replicate loop needs, from the input alone: a worker given the same input rebuilds it identically. */
export function prepareRunStats(input: RunStatsInput) {
  const b = input.b ?? DEFAULT_BOOTSTRAP.b;
  const seed = input.seed ?? DEFAULT_BOOTSTRAP.seed;
  const k = input.k ?? 3;
  const index = new Map<string, number>();
  // Groups in the order of the first cell's samples (every cell of a run has the same), then any the real set adds.
  for (const c of input.cells) groupIndex(c.obs.promptId, index);
  const ref = input.reference;
  if (ref) groupIndex(ref.promptId, index);
  if (ref?.floor) groupIndex(ref.floor.promptId, index);
  const g = Math.max(1, index.size);
  const d = ref?.features.dim ?? 0;
  const refGroups = ref ? groupIndex(ref.promptId, index) : undefined;
  const reference =
    ref && refGroups
      ? {
          data: ref.features.data,
          groups: refGroups,
          d,
          self: selfKernel(ref.features.data, refGroups, d, g),
          rows: rows(ref.features),
          moments: new MomentSums(ref.features.data, d, refGroups, g),
        }
      : undefined;
  // The within-prompt plan takes its samples per group from the first cell (every cell of a run has the same).
  const first = input.cells[0]?.obs.promptId ?? [];
  const within = withinGroupPlan(groupSizes(groupIndex(first, index), g), b, seed);
  const cells = input.cells.map((c) => prepareCell(c.id, c.obs, index, g, reference, k, within));

  // The floor: the second real set scored against the first exactly as a cell is.
  let floorCell: Prepared | undefined;
  if (ref?.floor && reference) {
    floorCell = prepareCell(
      "(real vs real)",
      { promptId: ref.floor.promptId, features: ref.floor.features },
      index,
      g,
      reference,
      k,
      within,
    );
    for (const key of ["precision", "recall"]) floorCell.estimators.delete(key);
  }
  const all = floorCell ? [...cells, floorCell] : cells;

  const contextAt = (w: Weights): ReplicateContext => {
    if (!reference) return {};
    return {
      ref: factor(reference.moments.gaussian(w)),
      refSelf: uTerm(reference.self, w),
    };
  };
  const plan: BootstrapPlan = bootstrapPlan(g, b, seed);
  return { b, seed, g, index, cells, floorCell, all, contextAt, plan, within };
}

export type PreparedRun = ReturnType<typeof prepareRunStats>;

/**
 * Every prepared cell's replicate arrays, as views of one buffer in a fixed order (cell, then estimator key), so
 * that a worker thread can write its share of the replicates into the same memory.
 */
export function replicateViews(p: PreparedRun, buffer: ArrayBufferLike): Map<string, Float64Array>[] {
  let slot = 0;
  return p.all.map(
    (c) =>
      new Map([...c.estimators.keys()].map((key) => [key, new Float64Array(buffer, 8 * p.b * slot++, p.b)])),
  );
}

/** Slots replicateViews lays out. */
const replicateSlots = (p: PreparedRun) => p.all.reduce((n, c) => n + c.estimators.size, 0);

/** Replicates r0 … r1 − 1 of every cell into `reps`. */
export function fillReplicates(
  p: PreparedRun,
  r0: number,
  r1: number,
  reps: Map<string, Float64Array>[],
): void {
  for (let r = r0; r < r1; r++) {
    const w = replicate(p.plan, r);
    const ctx = { ...p.contextAt(w), within: withinReplicate(p.within, r) };
    p.all.forEach((c, ci) => {
      for (const [key, f] of c.estimators) reps[ci]!.get(key)![r] = f(w, ctx);
    });
  }
}

/** Replicates timed on this thread before deciding whether a second one pays. */
const PROBE = 16;
/** The estimated remaining work above which a second thread pays for its start (~1 s) and its own preparation. */
const WORKER_MIN_MS = 3000;

export interface ReplicateRequest {
  input: RunStatsInput;
  r0: number;
  r1: number;
  replicates: SharedArrayBuffer;
  /** [status (0 running, 1 done, 2 failed), message length]; then the failure's UTF-8 bytes. */
  signal: SharedArrayBuffer;
}

/**
 * Fills every replicate. Where the loop would take more than a few seconds (FD's eigenvalues at every replicate
 * dominate large runs) and a second core exists, a worker thread rebuilds the prepared run from the same input and
 * computes the second half of the replicates into the shared buffer while this thread computes the first; this
 * thread blocks on Atomics.wait, so runStats stays synchronous. The replicates are the same numbers either way: each
 * depends only on the plan's draws. A worker that fails or does not answer in time is taken over here.
 */
function replicateAll(
  p: PreparedRun,
  input: RunStatsInput,
  shared: SharedArrayBuffer,
  reps: Map<string, Float64Array>[],
) {
  const mode = input.threads ?? "auto";
  const probe = Math.min(p.b, PROBE);
  const t0 = performance.now();
  fillReplicates(p, 0, probe, reps);
  const perReplicate = (performance.now() - t0) / probe;
  const rest = p.b - probe;
  const parallel =
    rest > 1 &&
    (mode === "force" ||
      (mode === "auto" && availableParallelism() >= 2 && perReplicate * rest > WORKER_MIN_MS));
  if (!parallel) return fillReplicates(p, probe, p.b, reps);
  const split = probe + Math.floor(rest / 2);
  const signal = new SharedArrayBuffer(8 + 4096);
  const flag = new Int32Array(signal, 0, 2);
  const request: ReplicateRequest = { input, r0: split, r1: p.b, replicates: shared, signal };
  let worker: Worker | undefined;
  let failure: string | undefined;
  try {
    // ts-worker.mjs installs tsx's loader in the worker, then imports the TypeScript module.
    worker = new Worker(new URL("../core/ts-worker.mjs", import.meta.url), {
      workerData: { ...request, __tsModule: new URL("./run-stats-worker.ts", import.meta.url).href },
    });
    worker.unref();
  } catch (e) {
    failure = (e as Error).message;
  }
  fillReplicates(p, probe, split, reps);
  if (worker) {
    // Generous: the worker's share at this thread's pace, four times over, plus its start.
    const timeout = 30_000 + 4 * perReplicate * (p.b - split);
    if (Atomics.wait(flag, 0, 0, timeout) === "timed-out")
      failure = `no answer within ${Math.round(timeout)} ms`;
    else if (Atomics.load(flag, 0) !== 1)
      failure = new TextDecoder().decode(new Uint8Array(signal, 8, flag[1]!).slice());
    void worker.terminate();
  }
  if (failure) {
    process.stderr.write(`[stats] bootstrap worker: ${failure}; computing its replicates here\n`);
    fillReplicates(p, split, p.b, reps);
  }
}

/** Intervals and paired replicates for every cell of a run (see the file comment). */
export function runStats(input: RunStatsInput): RunStats {
  const p = prepareRunStats(input);
  const { b, seed, g, index, cells, floorCell, contextAt } = p;
  const shared = new SharedArrayBuffer(8 * b * replicateSlots(p));
  replicateAll(p, input, shared, replicateViews(p, shared));
  // Out of the shared buffer, so that what is returned is ordinary memory.
  const reps = replicateViews(p, new Uint8Array(shared).slice().buffer);
  const ones = identityWeights(g);
  const ctx1 = contextAt(ones);
  const statsOf = (c: Prepared, ci: number) => {
    const stats: Record<string, MetricStat> = {};
    for (const [key, f] of c.estimators) {
      const value = f(ones, ctx1);
      const w = c.wilson.get(key);
      if (w) {
        const [lo, hi] = wilsonInterval(w[0], w[1]);
        stats[key] = { value, lo, hi, n: w[1], method: "wilson" };
      } else {
        const method = intervalMethod(key);
        const iv = bootstrapInterval(reps[ci]!.get(key)!, value, method);
        const floor = FLOOR[key] ?? Number.NEGATIVE_INFINITY;
        stats[key] = {
          value,
          lo: Math.max(floor, iv.lo),
          hi: Math.max(floor, iv.hi),
          n: c.counts.get(key) ?? c.n,
          method,
        };
      }
    }
    return { stats, reps: Object.fromEntries(reps[ci]!) };
  };
  const out: RunStats = {
    b,
    seed,
    groups: [...index.keys()],
    cells: cells.map((c, ci) => ({
      id: c.id,
      n: c.n,
      ...statsOf(c, ci),
      ...(c.correct ? { correct: c.correct } : {}),
    })),
  };
  if (floorCell) out.floor = { n: floorCell.n, ...statsOf(floorCell, cells.length) };
  return out;
}
