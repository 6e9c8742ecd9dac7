// Matched-guidance frontiers: guidance scales of different strategies are not commensurate, so strategies are
// compared where they give the SAME diversity (GLIDE Fig. 6 reads its panels this way; "Guidance Matters", ICLR
// 2026, shows that most newer methods' edge goes once the effective strength is matched). Each strategy's cells,
// in scale order, trace a polyline in (diversity, fidelity); at a common diversity level the fidelity is
// interpolated linearly on the segment where the curve first reaches that level (lowest scale). Every bootstrap
// replicate is interpolated the same way from the same cells' replicate values (the shared prompt draws), so the
// difference between two strategies at one level has a paired interval.
import { percentileInterval } from "./bootstrap.ts";

export interface FrontierCurve {
  name: string;
  /** Cells in scale order: their diversity and fidelity, point values and bootstrap replicates (length B). */
  x: number[];
  y: number[];
  xReps: Float64Array[];
  yReps: Float64Array[];
}

export interface LevelResult {
  level: number;
  /** Fidelity per curve at this level (NaN where the curve does not reach it), with 95% interval. */
  values: { name: string; value: number; lo: number; hi: number }[];
  /** Best curve by point value, the runner-up, and best − runner-up with its paired 95% interval. */
  best?: string;
  runnerUp?: string;
  delta?: number;
  deltaLo?: number;
  deltaHi?: number;
  /** The interval of Δ excludes 0. */
  resolved: boolean;
  /** Replicates where both curves reached the level (the interval is over these). */
  used: number;
}

export interface FrontierComparison {
  xKey: string;
  yKey: string;
  /** Higher fidelity is better unless "lower". */
  better: "higher" | "lower";
  levels: LevelResult[];
  /** A curve best at every level with a resolved Δ at each, else undefined. */
  dominant?: string;
}

/** y at the first crossing of x = level along the polyline (NaN when it never reaches the level). */
export function interpolateAt(x: ArrayLike<number>, y: ArrayLike<number>, level: number): number {
  for (let i = 0; i + 1 < x.length; i++) {
    const x0 = x[i]!;
    const x1 = x[i + 1]!;
    if (
      !Number.isFinite(x0) ||
      !Number.isFinite(x1) ||
      !Number.isFinite(y[i]!) ||
      !Number.isFinite(y[i + 1]!)
    )
      continue;
    if ((x0 - level) * (x1 - level) > 0) continue;
    if (x0 === x1) return (y[i]! + y[i + 1]!) / 2;
    const t = (level - x0) / (x1 - x0);
    return y[i]! + t * (y[i + 1]! - y[i]!);
  }
  return Number.NaN;
}

/** Diversity levels every curve spans: `count` points inside the intersection of the curves' x ranges. */
export function commonLevels(curves: readonly FrontierCurve[], count = 5): number[] {
  let lo = Number.NEGATIVE_INFINITY;
  let hi = Number.POSITIVE_INFINITY;
  for (const c of curves) {
    const xs = c.x.filter(Number.isFinite);
    if (xs.length < 2) return [];
    lo = Math.max(lo, Math.min(...xs));
    hi = Math.min(hi, Math.max(...xs));
  }
  if (!(hi > lo)) return [];
  return Array.from({ length: count }, (_, i) => lo + ((hi - lo) * (i + 0.5)) / count);
}

export function compareFrontiers(
  curves: readonly FrontierCurve[],
  xKey: string,
  yKey: string,
  better: "higher" | "lower" = "higher",
  count = 5,
): FrontierComparison | undefined {
  const usable = curves.filter((c) => c.x.filter(Number.isFinite).length >= 2);
  if (usable.length < 2) return undefined;
  const levels = commonLevels(usable, count);
  if (levels.length === 0) return undefined;
  const b = usable[0]!.xReps[0]?.length ?? 0;
  const sign = better === "higher" ? 1 : -1;
  const results = levels.map((level): LevelResult => {
    const reps = usable.map((c) => {
      const out = new Float64Array(b);
      const xs = new Float64Array(c.x.length);
      const ys = new Float64Array(c.y.length);
      for (let r = 0; r < b; r++) {
        for (let i = 0; i < c.x.length; i++) {
          xs[i] = c.xReps[i]![r]!;
          ys[i] = c.yReps[i]![r]!;
        }
        out[r] = interpolateAt(xs, ys, level);
      }
      return out;
    });
    const values = usable.map((c, i) => {
      const iv = percentileInterval(reps[i]!);
      return { name: c.name, value: interpolateAt(c.x, c.y, level), lo: iv.lo, hi: iv.hi };
    });
    const ranked = values
      .map((v, i) => ({ ...v, i }))
      .filter((v) => Number.isFinite(v.value))
      .sort((p, q) => sign * (q.value - p.value));
    const res: LevelResult = { level, values, resolved: false, used: 0 };
    if (ranked.length >= 2) {
      const [first, second] = ranked as [(typeof ranked)[0], (typeof ranked)[0]];
      const d = reps[first.i]!.map((v, r) => v - reps[second.i]![r]!);
      const iv = percentileInterval(d);
      res.best = first.name;
      res.runnerUp = second.name;
      res.delta = first.value - second.value;
      res.deltaLo = iv.lo;
      res.deltaHi = iv.hi;
      res.used = d.filter(Number.isFinite).length;
      res.resolved = Number.isFinite(iv.lo) && (sign > 0 ? iv.lo > 0 : iv.hi < 0);
    }
    return res;
  });
  const bests = new Set(results.map((r) => r.best));
  const dominant =
    bests.size === 1 && results.every((r) => r.resolved)
      ? (results[0]!.best as string | undefined)
      : undefined;
  return { xKey, yKey, better, levels: results, ...(dominant ? { dominant } : {}) };
}
