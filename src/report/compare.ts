// `guidance-lab compare RUN`: paired differences between cells of one run, and strategies compared at matched
// diversity, from the run folder alone. Cells of a run share x_T and step noise per sample, and their bootstrap
// replicates share the prompt draws, so every Δ here is paired: its interval is the percentile (basic for FD and
// IS) interval of the replicate differences and its p-value the bootstrap-SE Wald test; for accuracy, on the
// per-sample verdicts, Newcombe's paired score interval and the exact McNemar test. The p-values of all rows are
// Holm-adjusted together.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "csv-stringify/sync";
import { describeMetricKey } from "../metrics/index.ts";
import { mcnemarExact } from "../metrics/prompt-accuracy.ts";
import { bootstrapInterval, finiteMean, holm, samplesNeeded, sd, waldP } from "../stats/bootstrap.ts";
import {
  compareFrontiers,
  type FrontierComparison,
  type FrontierCurve,
  type LevelResult,
} from "../stats/frontier.ts";
import { newcombePairedInterval, pairedTable } from "../stats/paired-proportion.ts";
import { intervalMethod } from "../stats/run-stats.ts";
import { knownStrategyDef, parseStrategyConfig } from "../strategies/registry.ts";
import { neutraliseCsvCell } from "./csv.ts";
import {
  formatGuideGains,
  GUIDE_GAIN_COLUMNS,
  type GuideGains,
  guideGainRows,
  guideGains,
} from "./guide-gain.ts";
import { type RunIntervals, runIntervals } from "./intervals.ts";
import { isNeutral } from "./neutral.ts";
import { type CellRecord, paramsKey, type RunData, readRun } from "./run-folder.ts";
import { variantLabels } from "./variants.ts";

/** Metrics compared by default, fidelity first. */
export const COMPARE_KEYS = [
  "accuracy",
  "clip_score",
  "precision",
  "is",
  "fd",
  "kid",
  "recall",
  "diversity_clip",
  "diversity_pixel",
  "clip_score_guidance",
] as const;

/** Fidelity keys in order of preference for choosing a strategy's best cell. */
const FIDELITY = ["accuracy", "clip_score", "precision"] as const;
/** Diversity axes and fidelity axes of the matched-diversity frontiers. */
export const FRONTIER_X = ["recall", "diversity_clip"] as const;
export const FRONTIER_Y = ["accuracy", "clip_score", "precision"] as const;
/** The strategy every other curve is compared with at matched diversity: classifier-free guidance. */
const REFERENCE_STRATEGY = "cfg";

export { isNeutral } from "./neutral.ts";

export interface Pair {
  a: string;
  b: string;
  why: string;
}

export interface CompareRow {
  a: string;
  b: string;
  why: string;
  metric: string;
  valueA: number;
  valueB: number;
  /** a − b. */
  delta: number;
  lo: number;
  hi: number;
  sdDelta: number;
  test: "mcnemar" | "bootstrap";
  p: number;
  pHolm: number;
  nA: number;
  nB: number;
  /** The 95% interval of Δ excludes 0. */
  ciExcludesZero: boolean;
  /** ciExcludesZero and the Holm-adjusted p < 0.05. */
  resolved: boolean;
  targetDelta?: number;
  /** Samples per cell that would resolve targetDelta (level 0.05, power 0.8). */
  samplesNeeded?: number;
}

export interface CompareResult {
  rows: CompareRow[];
  frontiers: FrontierComparison[];
  /**
   * Each other strategy against classifier-free guidance alone, over the diversity range the two share (runs with
   * more than two curves, one of them plain `cfg`): "does X beat tuned CFG at matched diversity" ("Guidance
   * Matters", ICLR 2026), which the all-curves frontier cannot say once some curve leaves the common range.
   */
  againstReference: FrontierComparison[];
  stats: RunIntervals;
  /** Curves' names and cells, for the page's frontier chart. */
  curves: { name: string; cells: string[] }[];
  /** Gradient-guided cells against the unguided one: the guide's own gain beside the oracle's (guide-gain.ts). */
  guides?: GuideGains;
}

const variantKey = (r: CellRecord) => `${r.strategy}|${paramsKey(r)}|${r.steps}|${r.sampler}`;

/** The fidelity key the run has, for picking best cells. */
function fidelityKey(stats: RunIntervals): string | undefined {
  return FIDELITY.find((k) => stats.cells.some((c) => c.stats[k]));
}

/**
 * Default pairs: each strategy's best cell (by the first fidelity metric the run has: accuracy, CLIP score,
 * precision) against every other strategy's best, and against the conditional model (a neutral cell with the same
 * steps and sampler).
 */
export function defaultPairs(run: RunData, stats: RunIntervals): Pair[] {
  const key = fidelityKey(stats);
  if (!key) return [];
  const best = new Map<string, CellRecord>();
  const records = run.cells.map((c) => c.record).filter((r) => stats.byId.has(r.cellId));
  for (const r of records) {
    if (isNeutral(r)) continue;
    const v = stats.byId.get(r.cellId)!.stats[key]?.value ?? Number.NaN;
    const cur = best.get(r.strategy);
    const curV = cur
      ? (stats.byId.get(cur.cellId)!.stats[key]?.value ?? Number.NaN)
      : Number.NEGATIVE_INFINITY;
    if (Number.isFinite(v) && v > curV) best.set(r.strategy, r);
  }
  const bests = [...best.values()];
  const pairs: Pair[] = [];
  bests.forEach((a, i) => {
    for (const b of bests.slice(i + 1))
      pairs.push({ a: a.cellId, b: b.cellId, why: `best ${a.strategy} vs best ${b.strategy} (by ${key})` });
    const neutral =
      records.find(
        (r) => isNeutral(r) && r.strategy === a.strategy && r.steps === a.steps && r.sampler === a.sampler,
      ) ?? records.find((r) => isNeutral(r) && r.steps === a.steps && r.sampler === a.sampler);
    if (neutral)
      pairs.push({ a: a.cellId, b: neutral.cellId, why: `best ${a.strategy} vs the conditional model` });
  });
  return pairs;
}

/** Parses "a:b" pairs (cell ids). */
export function parsePairs(specs: readonly string[], run: RunData): Pair[] {
  const ids = new Set(run.cells.map((c) => c.record.cellId));
  return specs.map((s) => {
    const [a, b, ...rest] = s.split(":");
    if (!a || !b || rest.length) throw new Error(`compare: --pairs expects CELL_A:CELL_B, got '${s}'`);
    for (const id of [a, b])
      if (!ids.has(id)) throw new Error(`compare: no finished cell '${id}' in ${run.dir}`);
    return { a, b, why: "given" };
  });
}

/** Parses "metric=Δ" targets. */
export function parseTargets(specs: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of specs) {
    const m = /^([A-Za-z0-9_]+)=([0-9.eE+-]+)$/.exec(s);
    const v = m ? Number(m[2]) : Number.NaN;
    if (!m || !(v > 0)) throw new Error(`compare: --target-delta expects METRIC=Δ with Δ > 0, got '${s}'`);
    out[m[1]!] = v;
  }
  return out;
}

/**
 * Frontier curves: one per strategy variant × steps × sampler, cells in order of guidance strength. The strength is
 * `scale`, except for strategies whose registry entry names their own strength axis (`StrategyDef.strengthAxis`),
 * whose curve runs along that key at a fixed scale wherever the run varies it; otherwise they fall back to `scale`.
 */
export interface Curve {
  name: string;
  records: CellRecord[];
  strategy: string;
  /** Whether the curve's cells have their strategy's default parameters (scale aside) and run along scale. */
  plain: boolean;
  /** Steps and sampler, which every cell of a curve shares. */
  setting: string;
}

export function frontierCurves(run: RunData, stats: RunIntervals): Curve[] {
  const records = run.cells.map((c) => c.record).filter((r) => stats.byId.has(r.cellId));
  const axisGroups = new Map<string, { axis: string; records: CellRecord[] }>();
  for (const r of records) {
    const axis = strengthAxis(r);
    if (axis === undefined) continue;
    const k = `${r.strategy}|${paramsKey(withoutKey(r, axis))}|${r.scale}|${r.steps}|${r.sampler}`;
    const g = axisGroups.get(k) ?? { axis, records: [] };
    axisGroups.set(k, { axis, records: [...g.records, r] });
  }
  const alongAxis = [...axisGroups.values()].filter(
    (g) => new Set(g.records.map((r) => r.strategyParams[g.axis])).size >= 2,
  );
  const axisOf = new Map(alongAxis.flatMap((g) => g.records.map((r) => [r, g.axis] as const)));
  const groups = new Map<string, CellRecord[]>();
  for (const r of records) {
    if (axisOf.has(r)) continue;
    const k = variantKey(r);
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const multi = (f: (r: CellRecord) => unknown) => new Set(run.cells.map((c) => f(c.record))).size > 1;
  const steps = multi((r) => r.steps);
  const sampler = multi((r) => r.sampler);
  // Labels name what varies between curves, so a curve's own axis is left out of its label.
  const stripped = new Map(records.map((r) => [r, axisOf.has(r) ? withoutKey(r, axisOf.get(r)!) : r]));
  const labels = variantLabels([...stripped.values()]);
  const name = (r: CellRecord, suffix = "") =>
    [labels.get(stripped.get(r)!)! + suffix, steps ? `${r.steps} steps` : "", sampler ? r.sampler : ""]
      .filter(Boolean)
      .join(" · ");
  const fields = (r: CellRecord) => ({ strategy: r.strategy, setting: `${r.steps}|${r.sampler}` });
  return [
    ...[...groups.values()]
      .filter((rs) => rs.length >= 2)
      .map((rs) => ({
        name: name(rs[0]!),
        records: [...rs].sort((p, q) => p.scale - q.scale),
        ...fields(rs[0]!),
        plain: hasDefaultParams(rs[0]!),
      })),
    ...alongAxis.map(({ axis, records: rs }) => {
      const strength = (r: CellRecord) => Number(r.strategyParams[axis]);
      return {
        name: name(rs[0]!, ` along ${axis} at s = ${rs[0]!.scale}`),
        records: [...rs].sort((p, q) => strength(p) - strength(q)),
        ...fields(rs[0]!),
        plain: false,
      };
    }),
  ];
}

/** Whether a cell's strategy parameters (scale aside) are its registry entry's defaults. */
function hasDefaultParams(r: CellRecord): boolean {
  try {
    const defaults = parseStrategyConfig({ kind: r.strategy, scale: r.scale });
    return paramsKey(r) === paramsKey({ ...r, strategyParams: defaults as Record<string, unknown> });
  } catch {
    return false;
  }
}

/**
 * Which curve each curve is compared with alone, by the curves' fields (never their labels): cfg with default
 * parameters at the same steps and sampler; where the run has none there, every cfg curve at that setting (for the
 * other strategies' curves; two cfg variants are not compared with each other twice). [reference, curve] names.
 */
export function referencePairs(curves: readonly Omit<Curve, "records">[]): [string, string][] {
  const out: [string, string][] = [];
  for (const c of curves) {
    if (c.strategy === REFERENCE_STRATEGY && c.plain) continue;
    const cfgs = curves.filter(
      (r) => r !== c && r.strategy === REFERENCE_STRATEGY && r.setting === c.setting,
    );
    const plain = cfgs.filter((r) => r.plain);
    const refs = plain.length ? plain : c.strategy === REFERENCE_STRATEGY ? [] : cfgs;
    for (const r of refs) out.push([r.name, c.name]);
  }
  return out;
}

/** The cell's strength axis from its strategy's registry entry, when the cell sets it to a number. */
function strengthAxis(r: CellRecord): string | undefined {
  const axis = knownStrategyDef(r.strategy)?.strengthAxis;
  return axis !== undefined && typeof r.strategyParams[axis] === "number" ? axis : undefined;
}

function withoutKey(r: CellRecord, key: string): CellRecord {
  const { [key]: _dropped, ...rest } = r.strategyParams as Record<string, unknown>;
  return { ...r, strategyParams: rest };
}

export function compareRun(
  run: RunData,
  opts: { pairs?: Pair[]; targets?: Record<string, number>; stats?: RunIntervals; b?: number } = {},
): CompareResult | undefined {
  const stats = opts.stats ?? runIntervals(run, opts.b ? { b: opts.b } : {});
  if (!stats) return undefined;
  const pairs = opts.pairs ?? defaultPairs(run, stats);
  const rows: CompareRow[] = [];
  for (const pair of pairs) {
    const a = stats.byId.get(pair.a);
    const b = stats.byId.get(pair.b);
    if (!a || !b) throw new Error(`compare: cell ${!a ? pair.a : pair.b} has no observations`);
    for (const metric of COMPARE_KEYS) {
      const ra = a.reps[metric];
      const rb = b.reps[metric];
      if (!ra || !rb) continue;
      const d = ra.map((v, i) => v - rb[i]!);
      const va = a.stats[metric]!.value;
      const vb = b.stats[metric]!.value;
      const method = intervalMethod(metric);
      // IS's replicates are the within-prompt bootstrap's, paired by sample like the others by prompt.
      let iv = bootstrapInterval(d, va - vb, method);
      // For FD and IS the bootstrap's bias estimate is removed from Δ before testing, as the basic interval does.
      const centred = method === "basic" ? 2 * (va - vb) - finiteMean(d) : va - vb;
      let p = waldP(centred, d);
      let test: CompareRow["test"] = "bootstrap";
      if (metric === "accuracy" && a.correct && b.correct && a.correct.length === b.correct.length) {
        // The bootstrap's differences are all 0 when no pair is discordant ([0, 0]); the score interval is not.
        const t = pairedTable(a.correct, b.correct);
        iv = newcombePairedInterval(t);
        p = mcnemarExact(t.onlyA, t.onlyB);
        test = "mcnemar";
      }
      const sdDelta = sd(d);
      const target = opts.targets?.[metric];
      rows.push({
        a: pair.a,
        b: pair.b,
        why: pair.why,
        metric,
        valueA: va,
        valueB: vb,
        delta: va - vb,
        lo: iv.lo,
        hi: iv.hi,
        sdDelta,
        test,
        p,
        pHolm: Number.NaN,
        nA: a.stats[metric]!.n,
        nB: b.stats[metric]!.n,
        resolved: false,
        ciExcludesZero: Number.isFinite(iv.lo) && (iv.lo > 0 || iv.hi < 0),
        ...(target !== undefined
          ? { targetDelta: target, samplesNeeded: samplesNeeded(sdDelta, a.n, target) }
          : {}),
      });
    }
  }
  const adjusted = holm(rows.map((r) => r.p));
  rows.forEach((r, i) => {
    r.pHolm = adjusted[i]!;
    r.resolved = r.ciExcludesZero && r.pHolm < 0.05;
  });

  const curves = frontierCurves(run, stats);
  const frontiers: FrontierComparison[] = [];
  const againstReference: FrontierComparison[] = [];
  for (const x of FRONTIER_X) {
    for (const y of FRONTIER_Y) {
      const fc: FrontierCurve[] = [];
      for (const c of curves) {
        const cs = c.records.map((r) => stats.byId.get(r.cellId)!);
        if (!cs.every((s) => s.reps[x] && s.reps[y])) continue;
        fc.push({
          name: c.name,
          x: cs.map((s) => s.stats[x]!.value),
          y: cs.map((s) => s.stats[y]!.value),
          xReps: cs.map((s) => s.reps[x]!),
          yReps: cs.map((s) => s.reps[y]!),
        });
      }
      const better = describeMetricKey(y)?.better === "lower" ? "lower" : "higher";
      const f = compareFrontiers(fc, x, y, better);
      if (f) frontiers.push(f);
      if (fc.length > 2) {
        const byName = new Map(fc.map((c) => [c.name, c]));
        for (const [ref, name] of referencePairs(curves.filter((c) => byName.has(c.name)))) {
          const pair = compareFrontiers([byName.get(ref)!, byName.get(name)!], x, y, better);
          if (pair) againstReference.push(pair);
        }
      }
    }
  }
  const guides = guideGains(run, stats);
  return {
    rows,
    frontiers,
    againstReference,
    stats,
    curves: curves.map((c) => ({ name: c.name, cells: c.records.map((r) => r.cellId) })),
    ...(guides ? { guides } : {}),
  };
}

export const COMPARE_COLUMNS = [
  "a",
  "b",
  "why",
  "metric",
  "a_value",
  "b_value",
  "delta",
  "delta_lo",
  "delta_hi",
  "sd_delta",
  "test",
  "p",
  "p_holm",
  "n_a",
  "n_b",
  "ci_excludes_0",
  "resolved",
  "target_delta",
  "samples_needed",
] as const;

const num = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? "" : v);

export function compareCsv(rows: readonly CompareRow[]): string {
  // Variant names carry strategy parameters (free text, e.g. a negative prompt): never a spreadsheet formula.
  return stringify(
    [
      [...COMPARE_COLUMNS],
      ...rows.map((r) => [
        r.a,
        r.b,
        r.why,
        r.metric,
        num(r.valueA),
        num(r.valueB),
        num(r.delta),
        num(r.lo),
        num(r.hi),
        num(r.sdDelta),
        r.test,
        num(r.p),
        num(r.pHolm),
        r.nA,
        r.nB,
        r.ciExcludesZero ? "true" : "false",
        r.resolved ? "true" : "false",
        num(r.targetDelta),
        num(r.samplesNeeded),
      ]),
    ].map((row) => row.map(neutraliseCsvCell)),
  );
}

const f = (v: number | undefined) => {
  if (v === undefined || !Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(Number(v.toPrecision(3)));
};

/** Plain-text summary for the terminal. */
export function formatCompare(r: CompareResult): string {
  const lines: string[] = [];
  lines.push(
    `Paired differences (a − b), 95% CI from ${r.stats.b} prompt-bootstrap replicates over ${r.stats.groups.length} prompts; accuracy: Newcombe's paired score interval and exact McNemar p; p otherwise: bootstrap-SE Wald, Holm-adjusted over ${r.rows.length} tests; resolved = CI excludes 0 and Holm p < 0.05`,
  );
  let last = "";
  for (const row of r.rows) {
    const head = `${row.a} vs ${row.b}  (${row.why})`;
    if (head !== last) lines.push(`\n${head}`);
    last = head;
    const need =
      row.samplesNeeded !== undefined ? `  n/cell for Δ=${f(row.targetDelta)}: ${row.samplesNeeded}` : "";
    lines.push(
      `  ${row.metric.padEnd(20)} Δ ${f(row.delta).padStart(9)}  [${f(row.lo)}, ${f(row.hi)}]  p ${f(row.p)} (${row.test}), Holm ${f(row.pHolm)}  ${row.resolved ? "resolved" : "unresolved"}  n ${row.nA}/${row.nB}${need}`,
    );
  }
  if (r.stats.floor) {
    const fl = r.stats.floor.stats;
    lines.push(
      `\nNoise floor (real vs real, n ${r.stats.floor.n}): ${Object.entries(fl)
        .map(([k, s]) => `${k} ${f(s.value)} [${f(s.lo)}, ${f(s.hi)}]`)
        .join(", ")}`,
    );
  }
  for (const fr of r.frontiers) lines.push(`\n${frontierSentence(fr, samplesPerCell(r.stats))}`);
  if (r.againstReference.length > 0) {
    lines.push(`\nEach strategy against ${REFERENCE_STRATEGY} alone, over the range the two share:`);
    for (const fr of r.againstReference) lines.push(`  ${frontierSentence(fr, samplesPerCell(r.stats))}`);
  }
  if (r.guides) lines.push(`\n${formatGuideGains(r.guides).trimEnd()}`);
  return `${lines.join("\n")}\n`;
}

/** Samples per cell of a run's cells with observations: "840", or "84–840" when they differ. */
export function samplesPerCell(stats: RunIntervals): string {
  const ns = stats.cells.map((c) => c.n);
  const lo = Math.min(...ns);
  const hi = Math.max(...ns);
  return lo === hi ? `${lo}` : `${lo}–${hi}`;
}

/**
 * One sentence per frontier comparison: who leads at matched diversity, by how much, and how sure; `n` (samples
 * per cell, e.g. from `samplesPerCell`) is stated when given.
 */
export function frontierSentence(fr: FrontierComparison, perCell?: string): string {
  const n = fr.levels.length;
  const resolved = fr.levels.filter((l) => l.resolved);
  const span = `${f(fr.levels[0]!.level)}…${f(fr.levels.at(-1)!.level)}`;
  const leads = new Map<string, LevelResult[]>();
  for (const l of fr.levels) if (l.best) leads.set(l.best, [...(leads.get(l.best) ?? []), l]);
  const range = (ls: LevelResult[]) => {
    const ds = ls.map((l) => l.delta!);
    const lo = Math.min(...ds);
    const hi = Math.max(...ds);
    return lo === hi ? f(lo) : `${f(lo)}–${f(hi)}`;
  };
  const who = [...leads]
    .map(([name, ls]) => `${name} leads at ${ls.length}/${n} levels (by ${range(ls)} over the runner-up)`)
    .join("; ");
  const strongest = [...resolved].sort((a, b) => Math.abs(b.delta!) - Math.abs(a.delta!))[0];
  const verdict = resolved.length
    ? `resolved at ${resolved.length}/${n} levels, e.g. at ${fr.xKey} ${f(strongest!.level)}: ${strongest!.best} − ${strongest!.runnerUp} = ${f(strongest!.delta)} (95% CI ${f(strongest!.deltaLo)}…${f(strongest!.deltaHi)})`
    : `unresolved at every level (each Δ's 95% interval contains 0)`;
  return `${fr.yKey} at equal ${fr.xKey} (${span}${perCell ? `; N = ${perCell} per cell` : ""}): ${who}; ${verdict}.${fr.dominant ? ` ${fr.dominant} dominates this range.` : ""}`;
}

/**
 * Compare a run folder: writes compare.csv (and guide-gain.csv when cells carry guide scores) into `out` (default:
 * the run folder) and returns the result.
 */
export function compareRunFolder(
  dir: string,
  opts: { pairs?: string[]; targets?: string[]; b?: number; out?: string } = {},
): { result: CompareResult; csvPath: string; guideCsvPath?: string } {
  const run = readRun(dir);
  const targets = parseTargets(opts.targets ?? []);
  const pairs = opts.pairs?.length ? parsePairs(opts.pairs, run) : undefined;
  const result = compareRun(run, { ...(pairs ? { pairs } : {}), targets, ...(opts.b ? { b: opts.b } : {}) });
  if (!result)
    throw new Error(`compare: no cell of ${dir} has observations (runs before this version have none)`);
  const out = opts.out ?? dir;
  mkdirSync(out, { recursive: true });
  const csvPath = join(out, "compare.csv");
  writeFileSync(csvPath, compareCsv(result.rows));
  if (!result.guides) return { result, csvPath };
  const guideCsvPath = join(out, "guide-gain.csv");
  writeFileSync(
    guideCsvPath,
    stringify(
      [[...GUIDE_GAIN_COLUMNS], ...guideGainRows(result.guides)].map((row) => row.map(neutraliseCsvCell)),
    ),
  );
  return { result, csvPath, guideCsvPath };
}
