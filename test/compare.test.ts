// `guidance-lab compare`: default pairs, paired Δ with intervals, McNemar for accuracy, Holm, samples needed,
// compare.csv, and matched-diversity frontiers, on the synthetic run (whose observations are made up but whose
// metrics are computed from them as a sweep's are).
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import {
  COMPARE_COLUMNS,
  compareRun,
  compareRunFolder,
  formatCompare,
  frontierCurves,
  isNeutral,
  parsePairs,
  parseTargets,
  referencePairs,
} from "../src/report/compare.ts";
import { GUIDE_GAIN_COLUMNS, guideGainRows, guideGains } from "../src/report/guide-gain.ts";
import { runIntervals } from "../src/report/intervals.ts";
import { readCellObservations } from "../src/report/observations.ts";
import { readRun } from "../src/report/run-folder.ts";
import { writeSyntheticRun } from "../src/report/synthetic.ts";
import { compareFrontiers, interpolateAt } from "../src/stats/frontier.ts";
import { parseStrategyConfig, STRATEGIES } from "../src/strategies/registry.ts";

describe("compare", () => {
  const dir = mkdtempSync(join(tmpdir(), "gl-compare-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  writeSyntheticRun(dir);
  const run = readRun(dir);
  const stats = runIntervals(run)!;

  it("pairs each strategy's best cell with the others' best and with the conditional model", () => {
    const r = compareRun(run, { stats })!;
    const pairs = [...new Set(r.rows.map((x) => `${x.a}|${x.b}|${x.why}`))];
    const strategies = new Set(run.cells.map((c) => c.record.strategy));
    const bests = pairs.filter((p) => p.includes(" vs best "));
    assert.equal(
      bests.length,
      (strategies.size * (strategies.size - 1)) / 2,
      "every pair of strategies once",
    );
    const neutral = pairs.filter((p) => p.endsWith("vs the conditional model"));
    assert.ok(neutral.length >= 2, "best cells against the conditional model");
    for (const p of neutral) {
      const id = p.split("|")[1]!;
      assert.ok(isNeutral(run.cells.find((c) => c.record.cellId === id)!.record), `${id} is a neutral cell`);
    }
  });

  it("gives Δ = a − b with a paired interval, exact McNemar for accuracy, Holm ≥ raw p", () => {
    const r = compareRun(run, { stats, targets: { accuracy: 0.05, fd: 0.1 } })!;
    for (const row of r.rows) {
      assert.ok(Math.abs(row.delta - (row.valueA - row.valueB)) < 1e-12, `${row.metric}: Δ = a − b`);
      assert.ok(row.lo <= row.hi, `${row.metric}: interval ordered`);
      assert.ok(row.pHolm >= row.p - 1e-15 && row.pHolm <= 1, `${row.metric}: Holm p ≥ p`);
      assert.equal(row.test, row.metric === "accuracy" ? "mcnemar" : "bootstrap", `${row.metric}: test`);
      assert.equal(
        row.resolved,
        row.ciExcludesZero && row.pHolm < 0.05,
        "resolved = CI excludes 0 and Holm p < 0.05",
      );
      if (row.metric === "accuracy" || row.metric === "fd")
        assert.ok(row.samplesNeeded! > 0, `${row.metric}: samples needed for the target`);
    }
    assert.ok(
      r.rows.some((x) => x.resolved),
      "the synthetic run's large guidance effects are resolved",
    );
  });

  it("a cell against itself: Δ 0, p 1; bootstrap intervals [0, 0], accuracy's paired score interval has width", () => {
    const id = run.cells[0]!.record.cellId;
    const r = compareRun(run, { stats, pairs: [{ a: id, b: id, why: "self" }] })!;
    assert.ok(r.rows.some((x) => x.metric === "accuracy"));
    for (const row of r.rows) {
      assert.equal(row.delta, 0);
      assert.equal(row.resolved, false);
      if (row.metric === "is") continue;
      assert.equal(row.p, 1, `${row.metric}: p = 1`);
      if (row.metric === "accuracy") {
        // No discordant pair: the bootstrap's differences are all 0, Newcombe's interval is not degenerate.
        assert.ok(row.lo < 0 && row.hi > 0, `accuracy: [${row.lo}, ${row.hi}] straddles 0 with width`);
        assert.ok(Math.abs(row.lo + row.hi) < 1e-12, "symmetric when the two cells agree everywhere");
        assert.equal(row.test, "mcnemar");
      } else assert.deepEqual([row.lo, row.hi], [0, 0], `${row.metric}: degenerate interval`);
    }
  });

  it("writes compare.csv and prints Δ, CI and p; bad arguments name what was expected", () => {
    const { result, csvPath } = compareRunFolder(dir, { targets: ["accuracy=0.05"] });
    const lines = readFileSync(csvPath, "utf8").trim().split("\n");
    assert.equal(lines[0], COMPARE_COLUMNS.join(","), "header");
    assert.equal(lines.length, result.rows.length + 1, "one row per pair and metric");
    const text = formatCompare(result);
    assert.match(text, /accuracy\s+Δ\s+\S+\s+\[\S+, \S+\]\s+p \S+ \(mcnemar\), Holm/);
    assert.match(text, /Noise floor \(real vs real, n 36\): .*fd/);
    assert.match(text, /at equal (recall|diversity_clip) \(\S+…\S+; N = 36 per cell\)/, "frontiers state N");
    assert.throws(() => parsePairs(["a-b"], run), /CELL_A:CELL_B/);
    assert.throws(() => parsePairs(["x:y"], run), /no finished cell 'x'/);
    assert.throws(() => parseTargets(["fd=-1"]), /METRIC=Δ with Δ > 0/);
  });

  it("compares strategies at matched diversity with paired bands", () => {
    const r = compareRun(run, { stats })!;
    assert.ok(r.frontiers.length > 0, "at least one frontier comparison");
    for (const f of r.frontiers) {
      assert.equal(f.levels.length, 5, "five common levels");
      for (const l of f.levels) {
        for (const v of l.values)
          if (Number.isFinite(v.value)) assert.ok(v.lo <= v.hi, `${v.name}: band ordered`);
        if (l.best) assert.ok(l.delta! >= 0, "best minus runner-up is ≥ 0");
      }
    }
    // Each other strategy against cfg at the same steps, over the range those two share.
    assert.ok(r.againstReference.length > 0, "pairs against cfg");
    for (const f of r.againstReference) {
      const names = f.levels[0]!.values.map((v) => v.name);
      assert.equal(names.length, 2);
      assert.match(names[0]!, /^cfg( · |$)/, "cfg first");
      assert.equal(names[0]!.split(" · ")[1], names[1]!.split(" · ")[1], "same steps and sampler");
    }
    assert.match(formatCompare(r), /Each strategy against cfg alone/);
  });
});

describe("the reference curve", () => {
  const curve = (name: string, strategy: string, plain: boolean, setting = "25|ddpm") => ({
    name,
    strategy,
    plain,
    setting,
  });

  it("is cfg with default parameters at the same steps and sampler, chosen by fields, not labels", () => {
    const curves = [
      curve("plain A", "cfg", true),
      curve("plain B", "cfg", true, "50|ddpm"),
      curve("windowed", "cfg", false),
      curve("pag", "pag", false),
      curve("clip", "clip", true, "50|ddpm"),
      curve("apg elsewhere", "apg", true, "10|euler"),
    ];
    assert.deepEqual(referencePairs(curves), [
      ["plain A", "windowed"],
      ["plain A", "pag"],
      ["plain B", "clip"],
    ]);
  });

  it("is every cfg variant at that setting when none has default parameters", () => {
    // Two cfg variants and no plain cfg (the case a label lookup for "cfg" skipped silently).
    const curves = [
      curve("cfg (a)", "cfg", false),
      curve("cfg (b)", "cfg", false),
      curve("apg", "apg", true),
    ];
    assert.deepEqual(referencePairs(curves), [
      ["cfg (a)", "apg"],
      ["cfg (b)", "apg"],
    ]);
  });
});

describe("frontier curves", () => {
  const rec = (strategy: string, scale: number, strategyParams: Record<string, unknown> = {}) => ({
    cellId: `${strategy}-${scale}-${JSON.stringify(strategyParams)}`,
    strategy,
    scale,
    strategyParams: { kind: strategy, scale, ...strategyParams },
    steps: 25,
    sampler: "ddpm",
    metrics: {},
    nfe: 1,
    secondsPerImage: 1,
  });
  const curvesOf = (records: ReturnType<typeof rec>[]) =>
    frontierCurves(
      { cells: records.map((record) => ({ record })) } as unknown as Parameters<typeof frontierCurves>[0],
      { byId: new Map(records.map((r) => [r.cellId, {}])) } as unknown as Parameters<
        typeof frontierCurves
      >[1],
    ).map((c) => ({ name: c.name, cells: c.records.map((r) => r.cellId) }));

  it("run along perturbScale for perturbed guides at a fixed scale, along scale otherwise", () => {
    const pag = [3, 0, 1].map((w) => rec("pag", 1, { perturbScale: w, layers: ["m"] }));
    const cfg = [2, 1].map((s) => rec("cfg", s));
    const curves = curvesOf([...pag, ...cfg]);
    assert.deepEqual(curves, [
      { name: "cfg", cells: [cfg[1]!.cellId, cfg[0]!.cellId] },
      { name: "pag along perturbScale at s = 1", cells: [pag[1]!.cellId, pag[2]!.cellId, pag[0]!.cellId] },
    ]);
    // A perturbed guide swept in scale at one perturbScale keeps its curve along scale.
    const slg = [1, 3].map((s) => rec("slg", s, { perturbScale: 2.8 }));
    assert.deepEqual(curvesOf(slg), [{ name: "slg", cells: [slg[0]!.cellId, slg[1]!.cellId] }]);
  });

  it("take each strategy's strength axis from its registry entry (a new perturbed guide needs no report change)", () => {
    const withAxis = STRATEGIES.filter((d) => d.strengthAxis !== undefined);
    assert.ok(withAxis.length >= 3, "pag, seg and slg declare their axis");
    for (const def of withAxis) {
      const axis = def.strengthAxis!;
      const { kind: _k, scale, ...params } = parseStrategyConfig(def.example) as Record<string, unknown>;
      const cells = [2, 0.5].map((v) => rec(def.kind, Number(scale), { ...params, [axis]: v }));
      assert.deepEqual(curvesOf(cells), [
        { name: `${def.kind} along ${axis} at s = ${scale}`, cells: [cells[1]!.cellId, cells[0]!.cellId] },
      ]);
    }
    // A kind that names no axis stays along scale even when its params carry a numeric perturbScale.
    const cfg = [1, 0].map((w) => rec("cfg", 2, { perturbScale: w }));
    assert.deepEqual(curvesOf(cfg), []);
  });
});

describe("neutral cells", () => {
  it("follow each strategy's registry definition of its neutral setting", () => {
    const r = (strategy: string, scale: number, strategyParams: Record<string, unknown> = {}) => ({
      cellId: "x",
      strategy,
      scale,
      strategyParams,
      steps: 1,
      sampler: "ddpm",
      metrics: {},
      nfe: 1,
      secondsPerImage: 1,
    });
    assert.equal(isNeutral(r("cfg", 1)), true, "cfg at s = 1 is the conditional model");
    assert.equal(isNeutral(r("cfg", 3)), false);
    assert.equal(isNeutral(r("clip", 0, { base: { kind: "none" } })), true, "an added guide at 0");
    assert.equal(isNeutral(r("cfg-plus-plus", 0)), false, "cfg++'s neutral point is the unconditional model");
    assert.equal(isNeutral(r("pag", 1, { perturbScale: 0 })), true, "pag needs both scales neutral");
    assert.equal(isNeutral(r("pag", 1, { perturbScale: 3 })), false);
  });
});

describe("frontier interpolation", () => {
  it("interpolates y at the first crossing of a level and says NaN where the curve does not reach it", () => {
    assert.equal(interpolateAt([0.8, 0.6, 0.4], [1, 2, 3], 0.5), 2.5);
    assert.equal(interpolateAt([0.8, 0.6, 0.4], [1, 2, 3], 0.9), Number.NaN);
    assert.ok(
      Math.abs(interpolateAt([0.8, 0.6, 0.7], [1, 2, 3], 0.65) - 1.75) < 1e-12,
      "first crossing (lowest scale)",
    );
  });

  it("declares a dominant strategy only when it leads with a resolved margin at every level", () => {
    const b = 50;
    const reps = (v: number, jitter: number) =>
      Float64Array.from({ length: b }, (_, i) => v + jitter * Math.sin(i));
    const curve = (name: string, y0: number, jitter: number) => ({
      name,
      x: [0.8, 0.6, 0.4],
      y: [y0, y0 + 0.1, y0 + 0.2],
      xReps: [0.8, 0.6, 0.4].map((v) => reps(v, 0)),
      yReps: [y0, y0 + 0.1, y0 + 0.2].map((v) => reps(v, jitter)),
    });
    const clear = compareFrontiers([curve("a", 0.5, 0.01), curve("b", 0.3, 0.01)], "recall", "accuracy")!;
    assert.equal(clear.dominant, "a");
    const noisy = compareFrontiers([curve("a", 0.5, 0.5), curve("b", 0.45, 0.01)], "recall", "accuracy")!;
    assert.equal(noisy.dominant, undefined, "a lead inside the noise is not dominance");
    assert.ok(noisy.levels.every((l) => l.best === "a" && !l.resolved));
  });
});

describe("guide gains (the adversarial gap)", () => {
  const dir = mkdtempSync(join(tmpdir(), "gl-guide-gain-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  writeSyntheticRun(dir);
  const run = readRun(dir);
  const stats = runIntervals(run)!;
  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
  const obsOf = (id: string) => readCellObservations(join(dir, "cells", id))!;

  it("pairs each guided cell with the unguided one: Δ own score, Δ accuracy, Δ eval CLIP and their gap", () => {
    const g = guideGains(run, stats)!;
    const cellsOf = (kind: string) =>
      run.cells.filter((c) => c.record.strategy === kind && c.record.scale > (kind === "clip" ? 0 : 1));
    assert.deepEqual(
      g.rows.filter((r) => r.guided).map((r) => r.cell),
      cellsOf("clip").map((c) => c.record.cellId),
      "one row per guided, non-neutral cell",
    );
    // Classifier-free guidance scored by the same guide: the reference curve, with its own neutral cell.
    const reference = g.rows.filter((r) => !r.guided);
    assert.deepEqual(
      reference.map((r) => r.cell),
      cellsOf("cfg").map((c) => c.record.cellId),
    );
    for (const row of reference) {
      assert.equal(row.guideKind, "clip");
      assert.match(row.curve, /^cfg · (25|50) steps scored by noised-clip$/);
      const cell = run.cells.find((c) => c.record.cellId === row.cell)!.record;
      const ref = run.cells.find((c) => c.record.cellId === row.reference)!.record;
      assert.ok(ref.strategy === "cfg" && ref.scale === 1 && ref.steps === cell.steps, "cfg's own neutral");
    }
    const ref = run.cells.find((c) => c.record.strategy === "clip" && c.record.scale === 0)!.record.cellId;
    for (const row of g.rows.filter((r) => r.guided)) {
      assert.equal(row.reference, ref, "the neutral cell of the same steps and sampler");
      assert.equal(row.guide, "noised-clip", "the run's default CLIP guide");
      const a = obsOf(row.cell);
      const b = obsOf(ref);
      const own = mean(a.guideScores!["noised-clip"]!) - mean(b.guideScores!["noised-clip"]!);
      const clip = mean(a.clipScore!) - mean(b.clipScore!);
      assert.ok(Math.abs(row.guideScore.delta - own) < 1e-9, "Δ own score from the observations");
      assert.ok(Math.abs(row.gap!.delta - (own - clip)) < 1e-9, "gap = Δ own − Δ eval CLIP");
      const acc = mean(a.correct!.map(Number)) - mean(b.correct!.map(Number));
      assert.ok(Math.abs(row.accuracy!.delta - acc) < 1e-12, "Δ accuracy");
      for (const x of [row.guideScore, row.accuracy!, row.clipScore!, row.gap!]) {
        assert.ok(x.lo <= x.delta && x.delta <= x.hi, `interval around Δ: ${x.lo} ≤ ${x.delta} ≤ ${x.hi}`);
        assert.equal(x.resolved, (x.lo > 0 || x.hi < 0) && x.pHolm < 0.05);
      }
      const want =
        !row.guideScore.resolved || row.guideScore.delta <= 0
          ? "unresolved"
          : row.accuracy!.resolved
            ? row.accuracy!.delta > 0
              ? "confirmed"
              : "adversarial"
            : "unconfirmed";
      assert.equal(row.verdict, want);
    }
    assert.ok(
      g.rows.some((r) => r.guideScore.resolved),
      "the synthetic guide's large gains are resolved",
    );
    assert.equal(g.peaks.length, new Set(g.rows.map((r) => r.curve)).size, "one peak per curve");
  });

  it("reads guide scores that older runs kept in record.json, and writes guide-gain.csv where asked", () => {
    const legacy = mkdtempSync(join(tmpdir(), "gl-guide-gain-legacy-"));
    after(() => rmSync(legacy, { recursive: true, force: true }));
    cpSync(dir, legacy, { recursive: true });
    for (const id of readdirSync(join(legacy, "cells"))) {
      const obsPath = join(legacy, "cells", id, "observations.json");
      let obs: Record<string, unknown>;
      try {
        obs = JSON.parse(readFileSync(obsPath, "utf8"));
      } catch {
        continue; // the unfinished cell
      }
      const recPath = join(legacy, "cells", id, "record.json");
      const rec = JSON.parse(readFileSync(recPath, "utf8"));
      rec.guideScores = obs.guideScores;
      delete obs.guideScores;
      writeFileSync(obsPath, JSON.stringify(obs));
      writeFileSync(recPath, JSON.stringify(rec));
    }
    const old = readRun(legacy);
    const a = guideGains(run, stats)!;
    const b = guideGains(old, runIntervals(old)!)!;
    assert.deepEqual(
      b.rows.map((r) => [r.cell, r.guideScore.delta, r.guideScore.lo, r.verdict]),
      a.rows.map((r) => [r.cell, r.guideScore.delta, r.guideScore.lo, r.verdict]),
    );
    const out = join(dir, "elsewhere");
    const { guideCsvPath, csvPath } = compareRunFolder(legacy, { out });
    assert.ok(
      csvPath.startsWith(out) && guideCsvPath!.startsWith(out),
      "outputs where asked, not in the run",
    );
    const lines = readFileSync(guideCsvPath!, "utf8").trim().split("\n");
    assert.equal(lines[0], GUIDE_GAIN_COLUMNS.join(","));
    assert.equal(lines.length, a.rows.length + 1);
    for (const row of guideGainRows(a))
      assert.equal(row.length, GUIDE_GAIN_COLUMNS.length, "a field per column");
    assert.match(
      formatCompare(compareRun(old)!),
      /Guide strength: .*\n.*guide score .*→ (confirmed|unconfirmed)/,
    );
  });

  it("keeps a classifier guide's missing scores (NaN) as null in observations.json and out of the mean", () => {
    const id = run.cells[0]!.record.cellId;
    const cellDir = join(dir, "cells", id);
    const obsPath = join(cellDir, "observations.json");
    const raw = JSON.parse(readFileSync(obsPath, "utf8"));
    const n = raw.promptId.length;
    raw.guideScores.classifier = Array.from({ length: n }, (_, i) => (i % 2 ? null : -1));
    writeFileSync(obsPath, JSON.stringify(raw));
    const obs = obsOf(id);
    assert.ok(Number.isNaN(obs.guideScores!.classifier![1]!), "null reads as NaN");
    const st = runIntervals(readRun(dir))!.byId.get(id)!.stats["guide_score:classifier"]!;
    assert.equal(st.value, -1);
    assert.equal(st.n, Math.ceil(n / 2), "NaN samples left out");
    raw.guideScores.classifier = [1];
    writeFileSync(obsPath, JSON.stringify(raw));
    assert.throws(() => obsOf(id), /guideScores\.classifier has 1 entries for \d+ samples/);
  });
});
