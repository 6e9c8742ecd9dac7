// Every metric of every cell with its 95% interval, from the cells' observations alone. One loop over bootstrap
// replicates serves all cells, so each replicate's prompt draws (and the reference set's Gaussian, resampled with
// the same draws) are shared, and a difference between two cells' replicate values is a paired replicate of the
// difference. Accuracies also get Wilson intervals (the cell's interval); their replicates serve comparisons.
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
   * Wilson for accuracies; the bootstrap's basic interval for small-N-biased FD; "none" (NaN bounds) for IS (see
   * NO_INTERVAL); else the percentile interval.
   */
  method: "wilson" | "percentile" | "basic" | "none";
}

/**
 * Metrics the prompt bootstrap cannot give an interval: the Inception score's marginal p(y) is the prompt mix's
 * class mix, so a replicate that draws some prompts twice and others not at all has fewer classes and a lower IS
 * whatever the samples. The shift exceeds the spread: on the 840-per-cell glide-fig6 rerun (21 prompts) the basic
 * interval of every cell excluded its own estimate (IS 18.1, "interval" [21.9, 26.9]). IS is reported without an
 * interval (empty `is_lo`/`is_hi`; compare leaves its rows unresolved) until a within-prompt resampling exists.
 */
export const NO_INTERVAL: ReadonlySet<string> = new Set(["is"]);

/** Metrics biased at small N, whose intervals (and differences' intervals) use the basic bootstrap interval. */
export const BIASED_METRICS: ReadonlySet<string> = new Set(["fd"]);

/** Where the population value cannot go (a distance is ≥ 0): basic intervals are cut there. */
const FLOOR: Readonly<Record<string, number>> = { fd: 0 };

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
}

type Estimator = (w: Weights, ctx: ReplicateContext) => number;

interface ReplicateContext {
  ref?: ReturnType<typeof factor>;
  refSelf?: number;
}

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

function prepareCell(
  id: string,
  obs: CellObservations,
  index: Map<string, number>,
  g: number,
  reference:
    | { data: Float32Array; groups: Int32Array; d: number; self: SelfKernel; rows: Float32Array[] }
    | undefined,
  k: number,
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
    const s = new IsSums(obs.classProbs.data, obs.classProbs.dim, groups, g);
    est.set("is", (w) => s.at(w));
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

/** Intervals and paired replicates for every cell of a run (see the file comment). */
export function runStats(input: RunStatsInput): RunStats {
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
  const cells = input.cells.map((c) => prepareCell(c.id, c.obs, index, g, reference, k));

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
  const reps = all.map((c) => new Map([...c.estimators.keys()].map((key) => [key, new Float64Array(b)])));
  for (let r = 0; r < b; r++) {
    const w = replicate(plan, r);
    const ctx = contextAt(w);
    all.forEach((c, ci) => {
      for (const [key, f] of c.estimators) reps[ci]!.get(key)![r] = f(w, ctx);
    });
  }
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
      } else if (NO_INTERVAL.has(key)) {
        stats[key] = { value, lo: Number.NaN, hi: Number.NaN, n: c.counts.get(key) ?? c.n, method: "none" };
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
