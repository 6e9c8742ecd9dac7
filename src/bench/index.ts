// `npm run bench`: engine micro-benchmarks, then the project's real denoisers on each runtime (ONNX Runtime with 1
// and 2 threads, TensorFlow.js on the active backend): forward ms and GFLOP/s per model and batch size (the zoo's
// denoiser; GLIDE's small golden config at batch 4, 64×64; the full GLIDE base at batch 2 with --full-glide), and
// sampling steps per second per strategy (none, cfg, classifier, CLIP on the zoo-sized models, gradient guides on
// each runtime; cfg on GLIDE small), ONNX Runtime's conv roofline on this CPU (the zoo denoiser's batch-32 forward
// is reported against it), quickstart-sized cells on the shipped zoo (seconds per image per strategy, and a
// 1,000-sample cell's images per second estimated from them), and the zoo recipes' training steps per runtime
// (TensorFlow.js worker vs the traced step on ONNX Runtime). With
// --compare-torch PATH the official glide-text2im code runs side by side on the same GLIDE config and inputs; with
// --quickstart, the quickstart sweep's wall time on each runtime.
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { createDiffusion } from "../core/diffusion.ts";
import { type Tensor, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { Init } from "../core/layers.ts";
import { defaultGoldenDir } from "../core/paths.ts";
import { labelForPrompt, NUM_CLASSES, PAD_ID, tokenize, VOCAB_SIZE } from "../data/world.ts";
import { EncoderUNet } from "../nets/encoder-unet.ts";
import { UNet, type UNetConfig } from "../nets/unet.ts";
import { onnxCondGrad } from "../onnx/guide-grad.ts";
import type { Conditioning } from "../strategies/strategy.ts";
import { loadRecipe, resolveRecipe } from "../train/recipe.ts";
import {
  buildNoisedClip,
  classifierConfig,
  classifierModelSchema,
  denoiserModelSchema,
  denoiserUNetConfig,
  noisedClipModelSchema,
} from "../train/tasks.ts";
import { clipTextEncoder } from "../zoo/zoo.ts";
import { benchCells } from "./cells.ts";
import { benchEngine, formatTable, type Row } from "./engine.ts";
import { benchExplorer, type ExplorerBench } from "./explorer.ts";
import { benchGlide } from "./glide.ts";
import { benchQuickstart, quickstartSummary } from "./quickstart.ts";
import { convRoofline } from "./roofline.ts";
import { benchForward, benchSampling, load, type RuntimeSpec, runtimeSpecs } from "./runtimes.ts";
import { benchStats } from "./stats.ts";
import { type TorchOptions, torchMissing } from "./torch.ts";
import { benchTraining } from "./train.ts";

export interface BenchOptions {
  /** Tiny sizes and no GLIDE (a smoke test). */
  quick?: boolean;
  /** Also the full GLIDE base model (batch 2): ~1.5 GB of weights per copy and minutes on TensorFlow.js. */
  fullGlide?: boolean;
  /** A glide-text2im checkout: run the official code side by side (needs python3 with torch and numpy). */
  compareTorch?: string;
  /** Interpreter for --compare-torch (default python3). */
  python?: string;
  /** Also the quickstart sweep's wall time per runtime (what `npm start` runs; tens of minutes on TensorFlow.js). */
  quickstart?: boolean;
  /** Leave out the explorer's browser row (needs Chromium; about a minute). */
  noExplorer?: boolean;
}

async function _timeMs(fn: () => Tensor[], minMs: number, minReps = 2): Promise<number> {
  const run = async () => {
    const out = fn();
    await Promise.all(out.map((t) => t.data()));
    tf.dispose(out);
  };
  await run(); // warm-up: kernel selection and wasm memory growth
  let reps = 0;
  const t0 = performance.now();
  while (reps < minReps || performance.now() - t0 < minMs) {
    await run();
    reps++;
  }
  return (performance.now() - t0) / reps;
}

/** World prompts → the zoo denoiser's conditioning (as src/zoo/zoo.ts encodes them). */
function worldEncoder(ctx: number): (prompts: readonly string[]) => Conditioning {
  return (prompts) => {
    const ids = new Int32Array(prompts.length * ctx);
    for (const [i, p] of prompts.entries()) ids.set(tokenize(p, ctx), i * ctx);
    return {
      tokens: tf.tensor2d(ids, [prompts.length, ctx], "int32") as Tensor2D,
      mask: tf.tensor2d(
        Float32Array.from(ids, (id) => (id === PAD_ID ? 0 : 1)),
        [prompts.length, ctx],
      ) as Tensor2D,
    };
  };
}

export async function runBench(opts: BenchOptions = {}): Promise<Row[]> {
  const quick = opts.quick ?? false;
  const minMs = quick ? 50 : 3000;
  const out = (s: string) => process.stdout.write(s);
  out(`machine: ${availableParallelism()} cores, ${load()} at the start\n\n`);
  const rows = await benchEngine({ quick });
  out(`${formatTable(rows)}\n`);
  const { specs, onnxMissing } = await runtimeSpecs();
  if (onnxMissing) out(`\nonnxruntime-node does not load (${onnxMissing}): TensorFlow.js rows only\n`);
  let torch: TorchOptions | undefined;
  if (opts.compareTorch) {
    const t: TorchOptions = { checkout: opts.compareTorch, ...(opts.python ? { python: opts.python } : {}) };
    const missing = torchMissing(t);
    if (missing.length)
      out(`\n--compare-torch: skipped, missing:\n${missing.map((m) => `  - ${m}`).join("\n")}\n`);
    else torch = t;
  }

  // Forwards per model and batch size on each runtime.
  const fwd: Row[] = [];
  const recipe = loadRecipe(resolveRecipe("denoiser"));
  const size = quick ? 16 : recipe.world.size;
  const zooCfg: UNetConfig = denoiserUNetConfig(denoiserModelSchema.parse(recipe.model), size);
  if (zooCfg.text) zooCfg.text.vocabSize = VOCAB_SIZE;
  const init = new Init(1);
  const zoo = new UNet(init, zooCfg);
  const ctx = zooCfg.text?.ctx ?? 16;
  const encode = worldEncoder(ctx);
  const zooDetail = `${(zoo.numParams() / 1e6).toFixed(2)}M params, zoo recipe config`;
  // The zoo denoiser's batch-32 GFLOP/s per spec, against the conv roofline below.
  const zooB32 = new Map<string, number>();
  for (const batch of quick ? [2] : [1, 8, 32]) {
    const x = init.normal([batch, size, size, 3], 1) as Tensor4D;
    const t = tf.tensor1d(Array.from({ length: batch }, (_, i) => (i * 997) % 1000)) as Tensor1D;
    const cond = encode(Array.from({ length: batch }, (_, i) => (i % 2 ? "a red circle" : "a blue square")));
    try {
      const r = benchForward(
        { name: "zoo denoiser", unet: zoo, batch, x, t, cond, detail: zooDetail },
        specs,
        minMs,
      );
      fwd.push(...r.rows);
      if (batch === 32) for (const f of r.results) zooB32.set(f.spec.label, f.gflops);
    } finally {
      tf.dispose([x, t, cond.tokens!, cond.mask!]);
    }
  }
  const roofline = convRoofline(specs, {
    batch: quick ? 2 : 32,
    size,
    widths: quick ? [32] : [64, 128, 256],
    minMs,
  });
  fwd.push(...roofline.rows);
  // Training steps of the zoo's recipes on each runtime (the trainer's, data and loss included).
  for (const name of ["denoiser", "noised-clip"]) {
    const r = loadRecipe(resolveRecipe(name));
    fwd.push(
      ...(await benchTraining(quick ? { ...r, world: { ...r.world, size: 16 } } : r, {
        batch: quick ? 2 : r.batchSize,
        minMs,
        onnx: !onnxMissing,
      })),
    );
  }
  out(`\n${formatTable(fwd)}\n`);

  // Sampling steps per second per strategy on the zoo-sized models (random weights: speed does not depend on them),
  // at the quickstart's batch of 24 prompts. Gradient guides run where the spec says: ONNX Runtime specs trace them
  // (src/onnx/guide-grad.ts) on the spec's threads; "onnx x2 + tfjs guides" is the denoiser on ONNX Runtime with
  // the guides on TensorFlow.js (one thread here; sweeps on TensorFlow.js split them over two, split-guide.ts).
  const clfRecipe = loadRecipe(resolveRecipe("classifier"));
  const classifier = new EncoderUNet(
    new Init(3),
    classifierConfig(classifierModelSchema.parse(clfRecipe.model), size, NUM_CLASSES),
  );
  const clipRecipe = loadRecipe(resolveRecipe("noised-clip"));
  const clip = buildNoisedClip(
    noisedClipModelSchema.parse(clipRecipe.model),
    size,
    clipRecipe.diffusion.steps,
    new Init(4),
  );
  const base = recipe.diffusion;
  const samplingSpecs: RuntimeSpec[] = [...specs];
  if (!onnxMissing)
    samplingSpecs.splice(2, 0, {
      label: "onnx x2 + tfjs guides",
      runtime: "onnx",
      threads: 2,
      guides: "tfjs",
    });
  const sampling = benchSampling(
    {
      name: "zoo",
      unet: zoo,
      models: {
        encode,
        unconditionalPrompt: "",
        classifier,
        classifierLabel: (p) => labelForPrompt(p) ?? 0,
        clip,
        clipText: clipTextEncoder(clip),
      },
      guides: (spec) => {
        if ((spec.guides ?? spec.runtime) === "tfjs") return { models: {}, dispose: () => {} };
        const opts = spec.threads !== undefined ? { threads: spec.threads } : {};
        const c = onnxCondGrad<Tensor1D>("classifier", (x, t, y) => classifier.logProb(x, t, y), opts);
        const k = onnxCondGrad<Tensor2D>("noised CLIP", (x, t, z) => clip.similarity(x, t, z), opts);
        return {
          models: { classifier: c, clip: k },
          dispose: () => {
            c.dispose();
            k.dispose();
          },
        };
      },
      strategies: [
        { label: "none", config: { kind: "none" } },
        { label: "cfg", config: { kind: "cfg", scale: 3 } },
        { label: "classifier", config: { kind: "classifier", scale: 1, base: { kind: "none" } } },
        { label: "clip", config: { kind: "clip", scale: 3, base: { kind: "none" } } },
      ],
      prompts: Array.from({ length: quick ? 2 : 24 }, (_, i) => (i % 2 ? "a red circle" : "a blue square")),
      steps: (spec) => (quick ? 1 : spec.runtime === "tfjs" ? 5 : 10),
      respacing: (n) =>
        createDiffusion({
          schedule: base.schedule,
          steps: base.steps,
          respacing: String(n),
          modelVarType: "learned_range",
        }),
    },
    samplingSpecs,
  );
  classifier.dispose();
  clip.dispose();
  zoo.dispose();
  out(`\n${formatTable(sampling)}\n`);
  // What the intervals add to a sweep (bootstrap and KID against a quickstart cell's sampling time).
  const stats = benchStats(sampling, quick ? { b: 100, rowSamples: 2 } : { rowSamples: 24 });
  out(`\n${formatTable(stats)}\n`);

  // Quickstart-sized cells on the shipped zoo (sampling and metrics as a sweep records them).
  const cells = quick || onnxMissing ? undefined : await benchCells(["onnx"]);
  if (cells?.skipped) out(`\n(quickstart-sized cells skipped: ${cells.skipped})\n`);
  else if (cells) out(`\n${formatTable(cells.rows)}\n`);

  const glide: Row[] = [];
  const golden = defaultGoldenDir();
  if (!quick && existsSync(join(golden, "manifest.json"))) {
    glide.push(...(await benchGlide({ specs, golden, ...(torch ? { torch } : {}) })));
    out(`\n${formatTable(glide)}\n`);
  } else if (!quick) {
    out(`\n(no golden manifest at ${golden}: GLIDE small rows skipped)\n`);
  }
  if (opts.fullGlide) {
    const full = await benchGlide({
      model: "base",
      specs,
      golden,
      minMs: 0,
      steps: 3,
      tfjsSteps: 1,
      ...(torch ? { torch: { ...torch, minSeconds: 0 } } : {}),
    });
    glide.push(...full);
    out(`\n${formatTable(full)}\n`);
  }
  const explorer: ExplorerBench = opts.noExplorer ? { rows: [] } : await benchExplorer({ quick });
  if (explorer.rows.length) out(`\n${formatTable(explorer.rows)}\n${explorer.summary ?? ""}\n`);
  else if (explorer.skipped) out(`\n(explorer row skipped: ${explorer.skipped})\n`);
  const quickstart = opts.quickstart ? await benchQuickstart() : [];
  if (quickstart.length) out(`\n${formatTable(quickstart)}\n`);
  out(`\n${summary(glide)}${quickstartSummary(quickstart)}`);
  out(throughputSummary(sampling, cells?.rows ?? [], zooB32, roofline.best));
  out(
    `machine: ${load()} at the end (a shared machine's absolute figures are noisy; compare within one run)\n`,
  );
  return [
    ...rows,
    ...fwd,
    ...sampling,
    ...stats,
    ...(cells?.rows ?? []),
    ...glide,
    ...explorer.rows,
    ...quickstart,
  ];
}

/**
 * GLIDE forwards and cfg steps per runtime against the official code's, when it ran side by side in this run
 * (`--compare-torch`); figures recorded on other machines compare nothing, so without it there is no ratio.
 */
function summary(glide: Row[]): string {
  const lines: string[] = [];
  const line = (what: string, rowsOf: Row[]) => {
    if (!rowsOf.length) return;
    // The baseline is the official code's best figure in this run (its fastest thread count).
    const unitS = (r: Row) => r.ms / 1000;
    const torchRows = rowsOf.filter((r) => r.backend.startsWith("torch"));
    const base = torchRows.length ? Math.min(...torchRows.map(unitS)) : undefined;
    const parts = rowsOf.map((r) => {
      const s = unitS(r);
      const mine = !r.backend.startsWith("torch");
      return `${r.backend} ${s.toFixed(3)} s${base !== undefined && mine ? ` (${(base / s).toFixed(2)}x torch's speed)` : ""}`;
    });
    const note = base === undefined ? " (no official-code row: --compare-torch runs it side by side)" : "";
    lines.push(`${what}: ${parts.join(", ")}${note}`);
  };
  for (const name of [
    "GLIDE small forward",
    "GLIDE small cfg sampling",
    "GLIDE base forward",
    "GLIDE base cfg sampling",
  ])
    line(
      name,
      glide.filter((r) => r.name === name),
    );
  return lines.length ? `${lines.join("\n")}\n` : "";
}

/**
 * Issue 18's targets, as ratios within this run: gradient-guided seconds per step (and per image in a
 * quickstart-sized cell) against cfg's, and the zoo denoiser's batch-32 GFLOP/s against the conv roofline.
 */
function throughputSummary(
  sampling: Row[],
  cells: Row[],
  zooB32: Map<string, number>,
  roofline: Map<string, number>,
): string {
  const lines: string[] = [];
  const backends = [...new Set(sampling.map((r) => r.backend))];
  for (const b of backends) {
    const ms = (label: string) =>
      sampling.find((r) => r.backend === b && r.name === `zoo ${label} sampling`)?.ms;
    const cfg = ms("cfg");
    if (cfg === undefined) continue;
    const parts = ["classifier", "clip"].flatMap((k) => {
      const v = ms(k);
      return v === undefined ? [] : [`${k} ${(v / cfg).toFixed(2)}x`];
    });
    lines.push(`guided s/step vs cfg's on ${b} (target ≤ 1.5x): ${parts.join(", ")}`);
  }
  const cellPer = (k: string) => {
    const r = cells.find((c) => c.name === `cell s/image ${k}`);
    const m = r?.detail.match(/sampling ([0-9.]+) s\/image/);
    return m ? Number(m[1]) : undefined;
  };
  const cfgCell = cellPer("cfg");
  if (cfgCell !== undefined) {
    const parts = ["classifier", "clip"].flatMap((k) => {
      const v = cellPer(k);
      return v === undefined ? [] : [`${k} ${(v / cfgCell).toFixed(2)}x`];
    });
    lines.push(`quickstart-sized cell, sampling s/image vs cfg's (target ≤ 1.5x): ${parts.join(", ")}`);
  }
  for (const [label, roof] of roofline) {
    const z = zooB32.get(label);
    if (z === undefined) continue;
    lines.push(
      `zoo denoiser forward b32 on ${label}: ${z.toFixed(1)} GFLOP/s = ${((100 * z) / roof).toFixed(0)}% of the conv roofline ${roof.toFixed(1)} GFLOP/s (target ≥ 80%)`,
    );
  }
  return lines.length ? `${lines.join("\n")}\n` : "";
}
