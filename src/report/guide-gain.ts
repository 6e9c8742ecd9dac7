// The adversarial gap of gradient guidance (issue 19): for every cell guided by a classifier or a CLIP, paired
// against the unguided cell on the same x_T and step noise, the gain in the guide's own score (what the gradient
// raises) beside the gains the oracle and the evaluation CLIP confirm. GLIDE (Nichol et al. 2021, §3.2) prefers
// classifier-free guidance because CLIP guidance "finds adversarial examples" for its CLIP: its own score rises
// while the images get no closer to the caption. Here the oracle is exact, so that becomes measurable per guide and
// scale: a guide's gain that the oracle does not confirm.
import { mcnemarExact } from "../metrics/prompt-accuracy.ts";
import { bootstrapInterval, holm, waldP } from "../stats/bootstrap.ts";
import { newcombePairedInterval, pairedTable } from "../stats/paired-proportion.ts";
import { guideScoreKey } from "../stats/run-stats.ts";
import type { RunIntervals } from "./intervals.ts";
import { isNeutral } from "./neutral.ts";
import type { CellRecord, RunData } from "./run-folder.ts";
import { variantLabels } from "./variants.ts";

/** Strategy kinds guided by a gradient of a guide model, and where the run's config names their default guide. */
const GUIDED: Readonly<Record<string, { configKey?: string; fallback: string }>> = {
  clip: { configKey: "clip", fallback: "noised-clip" },
  classifier: { configKey: "classifier", fallback: "classifier" },
  // The zoo's default clean guide (src/zoo/zoo.ts DEFAULT_ZOO.cleanClip); sweep configs do not name it.
  "clean-clip": { fallback: "clean-clip" },
};

export interface Gain {
  /** Guided − reference. */
  delta: number;
  lo: number;
  hi: number;
  p: number;
  pHolm: number;
  n: number;
  /** The interval excludes 0 and the Holm-adjusted p < 0.05 (Holm over every gain of the run). */
  resolved: boolean;
}

export type GuideVerdict = "confirmed" | "unconfirmed" | "adversarial" | "unresolved";

export interface GuideGainRow {
  /** The guide model whose gradient steered the cell. */
  guide: string;
  /** The cell's strategy kind. */
  kind: string;
  /** Whether the guide's gradient steered the cell; false: classifier-free guidance scored by the guide (reference). */
  guided: boolean;
  /** What the guide is, which sets its score's unit: 100·cos for CLIPs, log p(y | x) for classifiers. */
  guideKind: "clip" | "classifier";
  /** Curve name (strategy variant, e.g. "clip (model=noised-clip-500)"). */
  curve: string;
  cell: string;
  /** The unguided cell on the same seeds (`none`, else a neutral cell with the same steps and sampler). */
  reference: string;
  scale: number;
  /** Δ of the guide's own score: 100·cos for CLIPs, log p(y | x) for classifiers. */
  guideScore: Gain;
  /** Δ oracle accuracy (Newcombe's paired interval, exact McNemar p). */
  accuracy?: Gain;
  /** Δ evaluation-CLIP score (100·cos). */
  clipScore?: Gain;
  /** CLIP guides: Δ guide score − Δ evaluation-CLIP score, the gain an independent CLIP does not share. */
  gap?: Gain;
  /**
   * confirmed: the guide's score and the oracle's accuracy both rose (resolved); adversarial: the guide's score
   * rose while accuracy fell (both resolved); unconfirmed: the guide's score rose and accuracy's change is
   * unresolved; unresolved: the guide's own gain is unresolved.
   */
  verdict: GuideVerdict;
}

export interface GuideGains {
  rows: GuideGainRow[];
  /** Per curve: the scale where the oracle's gain peaks, and how the guide's score and accuracy move past it. */
  peaks: GuidePeak[];
}

export interface GuidePeak {
  curve: string;
  guide: string;
  /** Cell and scale with the largest accuracy gain. */
  cell: string;
  scale: number;
  accuracy: Gain;
  /** The largest scale past the peak, against the peak cell (paired): accuracy and guide-score changes. */
  beyond?: { cell: string; scale: number; accuracy: Gain; guideScore: Gain };
}

/** The guide a cell's strategy used: its `model`, else the run's default for the kind. */
export function cellGuide(r: CellRecord, config: unknown): string | undefined {
  const g = GUIDED[r.strategy];
  if (!g) return undefined;
  const model = (r.strategyParams as { model?: unknown }).model;
  if (typeof model === "string") return model;
  const models = (config as { models?: Record<string, unknown> } | null)?.models;
  const named = g.configKey ? models?.[g.configKey] : undefined;
  return typeof named === "string" ? named : g.fallback;
}

type CellStats = NonNullable<ReturnType<RunIntervals["byId"]["get"]>>;

/** A paired bootstrap gain from two cells' replicates (percentile interval, Wald p on the bootstrap SE). */
function bootstrapGain(
  a: CellStats,
  b: CellStats,
  key: string,
): Omit<Gain, "pHolm" | "resolved"> | undefined {
  const ra = a.reps[key];
  const rb = b.reps[key];
  const sa = a.stats[key];
  const sb = b.stats[key];
  if (!ra || !rb || !sa || !sb || !Number.isFinite(sa.value) || !Number.isFinite(sb.value)) return undefined;
  const d = ra.map((v, i) => v - rb[i]!);
  const delta = sa.value - sb.value;
  const iv = bootstrapInterval(d, delta, "percentile");
  return { delta, lo: iv.lo, hi: iv.hi, p: waldP(delta, d), n: Math.min(sa.n, sb.n) };
}

/** Δ guide score − Δ eval-CLIP score, replicate by replicate (the same prompt draws serve all four series). */
function gapGain(a: CellStats, b: CellStats, guideKey: string): Omit<Gain, "pHolm" | "resolved"> | undefined {
  const keys = [guideKey, "clip_score"];
  if (!keys.every((k) => a.reps[k] && b.reps[k] && a.stats[k] && b.stats[k])) return undefined;
  const at = (c: CellStats, k: string) => c.stats[k]!.value;
  const delta = at(a, guideKey) - at(b, guideKey) - (at(a, "clip_score") - at(b, "clip_score"));
  if (!Number.isFinite(delta)) return undefined;
  const d = a.reps[guideKey]!.map(
    (v, i) => v - b.reps[guideKey]![i]! - (a.reps.clip_score![i]! - b.reps.clip_score![i]!),
  );
  const iv = bootstrapInterval(d, delta, "percentile");
  return { delta, lo: iv.lo, hi: iv.hi, p: waldP(delta, d), n: Math.min(a.n, b.n) };
}

function accuracyGain(a: CellStats, b: CellStats): Omit<Gain, "pHolm" | "resolved"> | undefined {
  if (!a.correct || !b.correct || a.correct.length !== b.correct.length || !a.stats.accuracy)
    return undefined;
  const t = pairedTable(a.correct, b.correct);
  const n = a.correct.length;
  const iv = newcombePairedInterval(t);
  return { delta: (t.onlyA - t.onlyB) / n, lo: iv.lo, hi: iv.hi, p: mcnemarExact(t.onlyA, t.onlyB), n };
}

/** The unguided cell a guided one pairs with: a `none` cell, else a neutral cell, with the same steps and sampler. */
function referenceFor(
  r: CellRecord,
  records: readonly CellRecord[],
  stats: RunIntervals,
): CellRecord | undefined {
  const same = records.filter(
    (x) => x.steps === r.steps && x.sampler === r.sampler && stats.byId.has(x.cellId) && isNeutral(x),
  );
  return (
    same.find((x) => x.strategy === "none") ??
    same.find((x) => x.strategy === r.strategy) ??
    same.find((x) => x.strategy.startsWith("cfg"))
  );
}

/** Every guided cell's gains against its unguided reference; undefined when no cell has guide scores. */
export function guideGains(run: RunData, stats: RunIntervals): GuideGains | undefined {
  const records = run.cells.map((c) => c.record).filter((r) => stats.byId.has(r.cellId));
  const labels = variantLabels(records);
  const varies = (f: (r: CellRecord) => unknown) => new Set(records.map(f)).size > 1;
  const multiSteps = varies((r) => r.steps);
  const multiSampler = varies((r) => r.sampler);
  const curveName = (r: CellRecord) =>
    [labels.get(r)!, multiSteps ? `${r.steps} steps` : "", multiSampler ? r.sampler : ""]
      .filter(Boolean)
      .join(" · ");
  const rows: GuideGainRow[] = [];
  const all: Omit<Gain, "pHolm" | "resolved">[] = [];
  const collect = (g: Omit<Gain, "pHolm" | "resolved"> | undefined) => {
    if (g) all.push(g);
    return g as Gain | undefined;
  };
  const peakGains: Omit<Gain, "pHolm" | "resolved">[] = [];
  const classifiers = new Set(
    records.filter((r) => r.strategy === "classifier").map((r) => cellGuide(r, run.config)!),
  );
  const defaultClassifier = (run.config as { models?: { classifier?: unknown } } | null)?.models?.classifier;
  if (typeof defaultClassifier === "string") classifiers.add(defaultClassifier);
  const PREFIX = guideScoreKey("");
  for (const r of records) {
    if (isNeutral(r)) continue;
    const own = cellGuide(r, run.config);
    // Classifier-free guidance (and other guides' cells) scored by every guide: how far a guide's score rises
    // when nothing optimises it, the reference for the gradient-guided curves.
    const scoredBy = own
      ? [own]
      : r.strategy === "cfg"
        ? Object.keys(stats.byId.get(r.cellId)!.stats)
            .filter((k) => k.startsWith(PREFIX))
            .map((k) => k.slice(PREFIX.length))
        : [];
    for (const guide of scoredBy) addRow(r, guide, own !== undefined);
  }
  function addRow(r: CellRecord, guide: string, guided: boolean): void {
    const key = guideScoreKey(guide);
    const ref = referenceFor(r, records, stats);
    if (!ref) return;
    const a = stats.byId.get(r.cellId)!;
    const b = stats.byId.get(ref.cellId)!;
    const own = collect(bootstrapGain(a, b, key));
    if (!own) return;
    const guideKind = classifiers.has(guide) ? "classifier" : "clip";
    const accuracy = collect(accuracyGain(a, b));
    const clipScore = collect(bootstrapGain(a, b, "clip_score"));
    const gap = guideKind === "classifier" ? undefined : collect(gapGain(a, b, key));
    rows.push({
      guide,
      kind: r.strategy,
      guided,
      guideKind,
      curve: guided ? curveName(r) : `${curveName(r)} scored by ${guide}`,
      cell: r.cellId,
      reference: ref.cellId,
      scale: r.scale,
      guideScore: own,
      ...(accuracy ? { accuracy } : {}),
      ...(clipScore ? { clipScore } : {}),
      ...(gap ? { gap } : {}),
      verdict: "unresolved",
    });
  }
  // A run whose guided cells are unfinished still shows how classifier-free guidance moves each guide's score.
  if (rows.length === 0) return undefined;

  // Past each curve's peak in accuracy: does the guide's own score keep rising while the oracle's does not?
  const peaks: GuidePeak[] = [];
  const byCurve = new Map<string, GuideGainRow[]>();
  for (const row of rows) byCurve.set(row.curve, [...(byCurve.get(row.curve) ?? []), row]);
  for (const [curve, rs] of byCurve) {
    const withAcc = rs.filter((x) => x.accuracy).sort((x, y) => x.scale - y.scale);
    if (withAcc.length === 0) continue;
    const peak = withAcc.reduce((best, x) => (x.accuracy!.delta > best.accuracy!.delta ? x : best));
    const last = withAcc.at(-1)!;
    const entry: GuidePeak = {
      curve,
      guide: peak.guide,
      cell: peak.cell,
      scale: peak.scale,
      accuracy: peak.accuracy!,
    };
    if (last.scale > peak.scale) {
      const a = stats.byId.get(last.cell)!;
      const b = stats.byId.get(peak.cell)!;
      const acc = accuracyGain(a, b);
      const own = bootstrapGain(a, b, guideScoreKey(peak.guide));
      if (acc && own) {
        peakGains.push(acc, own);
        entry.beyond = { cell: last.cell, scale: last.scale, accuracy: acc as Gain, guideScore: own as Gain };
      }
    }
    peaks.push(entry);
  }

  const gains = [...all, ...peakGains] as Gain[];
  const adjusted = holm(gains.map((g) => g.p));
  gains.forEach((g, i) => {
    g.pHolm = adjusted[i]!;
    g.resolved = Number.isFinite(g.lo) && (g.lo > 0 || g.hi < 0) && g.pHolm < 0.05;
  });
  for (const row of rows) row.verdict = verdictOf(row);
  return { rows, peaks };
}

function verdictOf(row: GuideGainRow): GuideVerdict {
  const own = row.guideScore;
  if (!(own.resolved && own.delta > 0)) return "unresolved";
  const acc = row.accuracy;
  if (acc?.resolved && acc.delta > 0) return "confirmed";
  if (acc?.resolved && acc.delta < 0) return "adversarial";
  return "unconfirmed";
}

const fmtG = (v: number) => {
  if (!Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(Number(v.toPrecision(3)));
};

/** "Δ [lo, hi]" with its resolution. */
export function gainText(g: Gain | undefined): string {
  if (!g) return "—";
  return `${fmtG(g.delta)} [${fmtG(g.lo)}, ${fmtG(g.hi)}]${g.resolved ? "" : " (unresolved)"}`;
}

/** Plain-text table for the terminal (compare prints it after the pairs). */
export function formatGuideGains(g: GuideGains): string {
  const lines = [
    "Guide strength: each guided cell against the unguided cell on the same seeds (Δ = guided − unguided, 95% CI; accuracy: Newcombe's paired interval, exact McNemar; else the paired prompt bootstrap; Holm over all gains). gap = Δ guide score − Δ eval-CLIP score (CLIP guides).",
  ];
  for (const r of g.rows) {
    lines.push(
      `  ${r.curve} s=${fmtG(r.scale)} (guide ${r.guide}, vs ${r.reference}): guide score ${gainText(r.guideScore)}; accuracy ${gainText(r.accuracy)}; eval CLIP ${gainText(r.clipScore)}${r.gap ? `; gap ${gainText(r.gap)}` : ""} → ${r.verdict}  n ${r.guideScore.n}`,
    );
  }
  for (const p of g.peaks) {
    const beyond = p.beyond
      ? `; from there to s=${fmtG(p.beyond.scale)}: accuracy ${gainText(p.beyond.accuracy)}, guide score ${gainText(p.beyond.guideScore)}`
      : "";
    lines.push(`  ${p.curve}: accuracy gain peaks at s=${fmtG(p.scale)} (${gainText(p.accuracy)})${beyond}`);
  }
  return `${lines.join("\n")}\n`;
}

export const GUIDE_GAIN_COLUMNS = [
  "guide",
  "kind",
  "guided",
  "curve",
  "cell",
  "reference",
  "scale",
  "n",
  ...["guide_score", "accuracy", "clip_score", "gap"].flatMap((m) => [
    `${m}_delta`,
    `${m}_lo`,
    `${m}_hi`,
    `${m}_p_holm`,
    `${m}_resolved`,
  ]),
  "verdict",
] as const;

/** Rows of guide-gain.csv (in GUIDE_GAIN_COLUMNS order). */
export function guideGainRows(g: GuideGains): (string | number)[][] {
  const num = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? "" : v);
  const cols = (x: Gain | undefined) =>
    x
      ? [num(x.delta), num(x.lo), num(x.hi), num(x.pHolm), x.resolved ? "true" : "false"]
      : ["", "", "", "", ""];
  return g.rows.map((r) => [
    r.guide,
    r.kind,
    r.guided ? "true" : "false",
    r.curve,
    r.cell,
    r.reference,
    r.scale,
    r.guideScore.n,
    ...cols(r.guideScore),
    ...cols(r.accuracy),
    ...cols(r.clipScore),
    ...cols(r.gap),
    r.verdict,
  ]);
}
