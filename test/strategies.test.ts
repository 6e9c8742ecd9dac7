// Guidance strategies: a contract every registry entry must honour (run over the whole registry), the formulas
// against hand-computed values, gradient guidance doing what it claims on tiny random models, and config errors.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createDiffusion, type GaussianDiffusion } from "../src/core/diffusion.ts";
import { initEngine, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { sample } from "../src/core/samplers/loop.ts";
import { ddimStep, sampleDdim, sampleDdpm, seededNoise } from "../src/core/samplers.ts";
import type { Prediction, StepInfo } from "../src/core/types.ts";
import { ClipModel } from "../src/nets/clip.ts";
import { unetModel } from "../src/nets/denoiser.ts";
import { EncoderUNet } from "../src/nets/encoder-unet.ts";
import type { EvalClip } from "../src/nets/eval-clip.ts";
import { UNet } from "../src/nets/unet.ts";
import { absQuantile, dynamicThreshold } from "../src/strategies/dynamic-threshold.ts";
import { buildStrategy, parseStrategyConfig, STRATEGIES, strategyDef } from "../src/strategies/registry.ts";
import {
  type Conditioning,
  type GuidanceModels,
  type GuidedSampling,
  hooksOf,
  type ModelCalls,
  type ModelFn,
} from "../src/strategies/strategy.ts";
import { tinyCleanClip, tinyCleanClipText } from "./helpers/tiny-clean-clip.ts";
import { tinyUNetConfig } from "./helpers/tiny-unet.ts";

const SIZE = 8;
const CTX = 8;
const B = 2;
const PROMPTS = ["a red circle", "a blue square"];
const NUM_CLASSES = 4;

/** A toy tokenizer: a word's id is a hash of its letters; "" is all padding with an empty mask. */
function tokenize(prompt: string): number[] {
  return prompt
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, CTX)
    .map((w) => 1 + ([...w].reduce((a, c) => a + c.charCodeAt(0), 0) % 30));
}

function encode(prompts: readonly string[]): Conditioning {
  const tokens = new Int32Array(prompts.length * CTX);
  const mask = new Float32Array(prompts.length * CTX);
  prompts.forEach((p, i) => {
    tokenize(p).forEach((id, j) => {
      tokens[i * CTX + j] = id;
      mask[i * CTX + j] = 1;
    });
  });
  return {
    tokens: tf.tensor2d(tokens, [prompts.length, CTX], "int32"),
    mask: tf.tensor2d(mask, [prompts.length, CTX]),
  };
}

const unetConfig = tinyUNetConfig({ vocabSize: 32, ctx: CTX }, { imageSize: SIZE });

interface Counter {
  model: number;
  weak: number;
  classifier: number;
  clip: number;
}
const zeroCounter = (): Counter => ({ model: 0, weak: 0, classifier: 0, clip: 0 });

/** Counts evaluated rows (per-sample network evaluations) of a ModelFn. */
const counting =
  (fn: ModelFn, counter: Counter, key: "model" | "weak"): ModelFn =>
  (x, t, c) => {
    counter[key] += x.shape[0];
    return fn(x, t, c);
  };

let unet: UNet;
let weakUnet: UNet;
let classifier: EncoderUNet;
let clip: ClipModel;
let cleanClip: EvalClip;
let diffusion: GaussianDiffusion;
/** The full table, for σ-space samplers (they choose their σs themselves). */
let sigmaDiffusion: GaussianDiffusion;

function clipText(prompts: readonly string[]): Tensor2D {
  return tf.tidy(() => {
    const lens = prompts.map((p) => Math.max(1, Math.min(CTX, tokenize(p).length)));
    const tokens = new Int32Array(prompts.length * CTX);
    prompts.forEach((p, i) => {
      tokenize(p).forEach((id, j) => {
        tokens[i * CTX + j] = id;
      });
    });
    return clip.embedText(tf.tensor2d(tokens, [prompts.length, CTX], "int32"), lens);
  });
}

const labelOf = (p: string) => tokenize(p).reduce((a, b) => a + b, 0) % NUM_CLASSES;

function tinyModels(counter: Counter = zeroCounter()): GuidanceModels {
  return {
    model: counting(unetModel(unet), counter, "model"),
    weak: counting(unetModel(weakUnet), counter, "weak"),
    // The perturbed network is the main one: its evaluations count as model calls.
    perturbed: (p) => counting(unetModel(unet, p), counter, "model"),
    encode,
    classifier: {
      condGrad: (x, t, y, s) => {
        counter.classifier += x.shape[0];
        return classifier.condGrad(x, t, y, s);
      },
    },
    classifierLabel: labelOf,
    clip: {
      condGrad: (x, t, z, s) => {
        counter.clip += x.shape[0];
        return clip.condGrad(x, t, z, s);
      },
    },
    clipText,
    cleanClip: {
      embedImage: (x0) => {
        counter.clip += x0.shape[0];
        return cleanClip.embedImage(x0);
      },
    },
    cleanClipText: (prompts) => tinyCleanClipText(cleanClip, prompts, encode),
    diffusion,
  };
}

const xT = () => seededNoise("x_T")(0, [B, SIZE, SIZE, 3]);

/** The samplers a strategy declares (cfg++: each of its forms), else the ancestral sampler. */
const samplersFor = (def: { samplers?: readonly { name: string }[] }) =>
  def.samplers?.map((s) => s.name) ?? ["ddpm"];

function run(g: GuidedSampling, sampler: string, seed = 1): { out: Float32Array; declared: ModelCalls } {
  const x = xT();
  const declared: ModelCalls = { model: 0, weak: 0, classifier: 0, clip: 0 };
  const opts = {
    noise: seededNoise(seed),
    ...hooksOf(g),
    onStep: (s: StepInfo) => {
      const c = g.calls(s);
      for (const k of ["model", "weak", "classifier", "clip"] as const) declared[k] += c[k];
    },
  };
  const y =
    sampler === "ddim"
      ? sampleDdim(diffusion, g.denoise, x, opts)
      : sampler === "ddpm"
        ? sampleDdpm(diffusion, g.denoise, x, opts)
        : sample(sigmaDiffusion, g.denoise, x, { ...opts, sampler, steps: 3 }).sample;
  const out = y.dataSync() as Float32Array;
  tf.dispose([x, y]);
  return { out, declared };
}

function sampleWith(raw: unknown, sampler: string, prompts = PROMPTS, seed = 1) {
  const counter = zeroCounter();
  const s = buildStrategy(raw, tinyModels(counter));
  const g = s.bind(prompts);
  try {
    const { out, declared } = run(g, sampler, seed);
    return { out, counted: counter, declared };
  } finally {
    g.dispose();
  }
}

before(async () => {
  await initEngine("wasm", { quiet: true });
  unet = new UNet(new Init(1), unetConfig);
  weakUnet = new UNet(new Init(2), unetConfig);
  classifier = new EncoderUNet(new Init(3), {
    imageSize: SIZE,
    inChannels: 3,
    modelChannels: 32,
    outChannels: NUM_CLASSES,
    numResBlocks: 1,
    attentionResolutions: [],
    channelMult: [1, 2],
    numHeads: 1,
    numHeadChannels: 32,
    useScaleShiftNorm: true,
    resblockUpdown: true,
    useNewAttentionOrder: false,
    pool: "attention",
  });
  clip = new ClipModel(new Init(4), {
    imageSize: SIZE,
    patchSize: 4,
    nVocab: 32,
    maxTextLen: CTX,
    nEmbd: 16,
    nHeadStateText: 8,
    nHeadText: 2,
    nXfBlocksText: 1,
    nHeadStateImage: 8,
    nHeadImage: 2,
    nXfBlocksImage: 1,
    nTimesteps: 100,
    logitScale: 100,
  });
  cleanClip = tinyCleanClip(SIZE, 5);
  diffusion = createDiffusion({
    schedule: "cosine",
    steps: 100,
    respacing: "4",
    modelVarType: "learned_range",
  });
  sigmaDiffusion = createDiffusion({ schedule: "cosine", steps: 100, modelVarType: "learned_range" });
});

after(() => {
  for (const m of [unet, weakUnet, classifier, clip, cleanClip]) m?.dispose();
});

describe("contract: every registry entry", () => {
  test("a wrapper over a renoising base (cfg++) hands the sampler its renoise, or refuses it when parsed", () => {
    const renoising = STRATEGIES.filter((d) => d.renoises).map((d) => d.example);
    assert.ok(renoising.length > 0, "cfg++ declares its renoising prediction");
    for (const def of STRATEGIES) {
      if (!("base" in parseStrategyConfig(def.example))) continue;
      for (const base of renoising) {
        const raw = { ...def.example, base };
        if (def.refusesRenoisingBase) {
          assert.throws(
            () => parseStrategyConfig(raw, "cfg.yaml"),
            new RegExp(
              `^Error: cfg.yaml '${def.kind}': base: '${def.kind}' .*'${base.kind.replace(/\+/g, "\\+")}'`,
            ),
          );
          continue;
        }
        const g = buildStrategy(raw, tinyModels()).bind(PROMPTS);
        let steps = 0;
        let renoised = 0;
        const spy: GuidedSampling = {
          ...g,
          denoise: (x, step) => {
            const p = g.denoise(x, step);
            steps++;
            if (p.renoise) renoised++;
            return p;
          },
        };
        try {
          run(spy, "ddim");
        } finally {
          g.dispose();
        }
        assert.ok(steps > 0);
        assert.equal(
          renoised,
          steps,
          `${def.kind} passes ${base.kind}'s renoising prediction on at every step`,
        );
      }
    }
    // At any depth, naming the path; a base that does not renoise is accepted.
    const deep = { kind: "dynamic-threshold", base: { kind: "dynamic-threshold", base: { kind: "cfg++" } } };
    assert.throws(
      () => parseStrategyConfig({ kind: "dynamic-threshold", base: { kind: "clean-clip", base: deep } }),
      /'dynamic-threshold': base\.base: 'clean-clip' rebuilds .*'dynamic-threshold'.*e\.g\. cfg instead of cfg\+\+/,
    );
    assert.doesNotThrow(() => parseStrategyConfig({ kind: "clean-clip", base: { kind: "cfg", scale: 3 } }));
  });

  test("a strength axis is a numeric key of the config; every perturbed-model guide declares perturbScale", () => {
    for (const def of STRATEGIES) {
      const parsed = parseStrategyConfig(def.example) as Record<string, unknown>;
      if (def.strengthAxis !== undefined)
        assert.equal(
          typeof parsed[def.strengthAxis],
          "number",
          `${def.kind}: ${def.strengthAxis} is a number`,
        );
      // Frontier curves run along the declared axis (report/compare.ts reads it from here), so a guide with a
      // perturbation weight that forgot perturbedDefParts would silently be drawn along scale.
      if (typeof parsed.perturbScale === "number")
        assert.equal(def.strengthAxis, "perturbScale", `${def.kind} declares its strength axis`);
    }
  });

  for (const def of STRATEGIES)
    for (const sampler of samplersFor(def)) {
      const under = sampler === "ddpm" ? "" : ` (${sampler})`;
      test(`${def.kind}${under}: shape, determinism, no leak, declared calls`, () => {
        const before = tf.memory().numTensors;
        const a = sampleWith(def.example, sampler);
        const after = tf.memory().numTensors;
        assert.equal(after, before, `${def.kind} leaked ${after - before} tensors`);
        assert.equal(a.out.length, B * SIZE * SIZE * 3);
        assert.ok(a.out.every(Number.isFinite), "finite output");
        const b = sampleWith(def.example, sampler);
        assert.deepEqual(b.out, a.out, "same seed, same output");
        for (const k of ["model", "weak", "classifier", "clip"] as const) {
          assert.equal(
            a.counted[k],
            a.declared[k] * B,
            `${def.kind}: declared ${k} calls match the counted rows`,
          );
        }
      });

      test(`${def.kind}${under}: the neutral setting is the unguided sampler, with no extra call`, () => {
        const parsed = parseStrategyConfig(def.example);
        const { config, equals } = strategyDef(def.kind).neutral(parsed);
        const reference =
          equals === "conditional"
            ? { kind: "none" }
            : equals === "unconditional"
              ? { kind: "unconditional" }
              : (config as unknown as { base: unknown }).base;
        const counter = zeroCounter();
        const g = buildStrategy(config, tinyModels(counter)).bind(PROMPTS);
        let neutral: Float32Array;
        let clipDenoised: boolean | undefined;
        try {
          neutral = run(g, sampler).out;
          clipDenoised = g.clipDenoised;
        } finally {
          g.dispose();
        }
        const refCounter = zeroCounter();
        const r = buildStrategy(reference, tinyModels(refCounter)).bind(PROMPTS);
        // The reference runs with the sampler options the neutral strategy asked for (cfg++ turns the clamp off).
        const rr = clipDenoised === undefined ? r : { ...r, clipDenoised };
        try {
          assert.deepEqual(neutral, run(rr, sampler).out, `${def.kind} at its neutral setting = ${equals}`);
        } finally {
          r.dispose();
        }
        assert.deepEqual(counter, refCounter, "no extra model call");
      });
    }
});

// ---------------------------------------------------------------- formulas on small tensors

/**
 * A fake denoiser whose eps row depends on the conditioning through its first token: eps = 0.5·x + id/10 + ramp,
 * and whose variance values are id/40, so every combination can be written out by hand.
 */
const ramp = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i + 1));

function fakeModel(counter?: Counter, shift = 0): ModelFn {
  return (x, _t, cond) =>
    tf.tidy(() => {
      if (counter) counter.model += x.shape[0];
      const [b, h, w, c] = x.shape;
      const ids = tf.reshape(tf.cast(tf.slice(cond.tokens!, [0, 0], [b, 1]), "float32"), [b, 1, 1, 1]);
      const r = tf.tensor4d(ramp(h * w * c), [1, h, w, c]);
      const out = tf.add(tf.add(tf.mul(0.5, x), tf.div(tf.add(ids, shift), 10)), r) as Tensor4D;
      const varValues = tf.mul(tf.div(ids, 40), tf.onesLike(x)) as Tensor4D;
      return { out, kind: "eps" as const, varValues };
    });
}

function fakeModels(extra: Partial<GuidanceModels> = {}): GuidanceModels {
  return { model: fakeModel(), weak: fakeModel(undefined, 7), encode, diffusion, ...extra };
}

const STEP: StepInfo = { index: 2, t: 66, k: 1 };
const N = SIZE * SIZE * 3;

/** Host eps of the fake model for prompt p at x (a Float32Array of one sample). */
function fakeEps(p: string, x: Float32Array, shift = 0): Float64Array {
  const id = tokenize(p)[0] ?? 0;
  const r = ramp(N);
  return Float64Array.from(x, (v, i) => Math.fround(0.5 * v) + (id + shift) / 10 + r[i]!);
}

function denoiseOnce(
  raw: unknown,
  prompts = PROMPTS,
  models = fakeModels(),
): { pred: Prediction; x: Float32Array } {
  const g = buildStrategy(raw, models).bind(prompts);
  try {
    const x = xT();
    const pred = g.denoise(x, STEP);
    const xs = x.dataSync() as Float32Array;
    x.dispose();
    return { pred, x: xs };
  } finally {
    g.dispose();
  }
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) {
  assert.equal(got.length, want.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  assert.ok(worst <= tol, `${what}: max |diff| ${worst} > ${tol}`);
}

const sampleRows = (a: ArrayLike<number>, b: number) => Array.from(a).slice(b * N, (b + 1) * N);

describe("formulas against hand-computed values", () => {
  test("cfg: eps_u + s·(eps_c − eps_u), variance from the conditional half", () => {
    const s = 2.5;
    const { pred, x } = denoiseOnce({ kind: "cfg", scale: s });
    const got = pred.out.dataSync();
    for (let b = 0; b < B; b++) {
      const xb = Float32Array.from(sampleRows(x, b));
      const c = fakeEps(PROMPTS[b]!, xb);
      const u = fakeEps("", xb);
      assertClose(
        sampleRows(got, b),
        Array.from(c, (v, i) => u[i]! + s * (v - u[i]!)),
        1e-5,
        "cfg",
      );
      const id = tokenize(PROMPTS[b]!)[0]!;
      assertClose(sampleRows(pred.varValues!.dataSync(), b), Array(N).fill(id / 40), 1e-6, "variance");
    }
    tf.dispose([pred.out, pred.varValues!]);
  });

  test("negative: the negative prompt is the second branch", () => {
    const s = 4;
    const neg = "a green triangle";
    const { pred, x } = denoiseOnce({ kind: "negative", scale: s, negativePrompt: neg });
    const got = pred.out.dataSync();
    for (let b = 0; b < B; b++) {
      const xb = Float32Array.from(sampleRows(x, b));
      const c = fakeEps(PROMPTS[b]!, xb);
      const n = fakeEps(neg, xb);
      assertClose(
        sampleRows(got, b),
        Array.from(c, (v, i) => n[i]! + s * (v - n[i]!)),
        1e-5,
        "negative",
      );
    }
    tf.dispose([pred.out, pred.varValues!]);
  });

  test("composable: eps_u + Σ w_i (eps_i − eps_u) with AND / NOT and explicit weights", () => {
    const prompts = ["a red circle AND a blue square::2 NOT a green triangle", "a cyan circle"];
    const s = 1.5;
    const { pred, x } = denoiseOnce({ kind: "composable", scale: s }, prompts);
    const got = pred.out.dataSync();
    const terms = [
      [
        ["a red circle", s],
        ["a blue square", 2],
        ["a green triangle", -s],
      ],
      [["a cyan circle", s]],
    ] as const;
    terms.forEach((ts, b) => {
      const xb = Float32Array.from(sampleRows(x, b));
      const u = fakeEps("", xb);
      const want = Float64Array.from(u);
      for (const [p, w] of ts) {
        const e = fakeEps(p, xb);
        for (let i = 0; i < N; i++) want[i]! += w * (e[i]! - u[i]!);
      }
      assertClose(sampleRows(got, b), want, 1e-5, `composable sample ${b}`);
    });
    tf.dispose([pred.out, pred.varValues!]);
  });

  test("cfg-rescale: φ·(g·std(c)/std(g)) + (1 − φ)·g", () => {
    const s = 5;
    const phi = 0.7;
    const { pred, x } = denoiseOnce({ kind: "cfg-rescale", scale: s, phi });
    const got = pred.out.dataSync();
    const std = (a: ArrayLike<number>) => {
      const m = Array.from(a).reduce((p, v) => p + v, 0) / a.length;
      return Math.sqrt(Array.from(a).reduce((p, v) => p + (v - m) ** 2, 0) / a.length);
    };
    for (let b = 0; b < B; b++) {
      const xb = Float32Array.from(sampleRows(x, b));
      const c = fakeEps(PROMPTS[b]!, xb);
      const u = fakeEps("", xb);
      const g = Array.from(c, (v, i) => u[i]! + s * (v - u[i]!));
      const k = std(c) / std(g);
      assertClose(
        sampleRows(got, b),
        g.map((v) => phi * v * k + (1 - phi) * v),
        1e-4,
        "cfg-rescale",
      );
    }
    tf.dispose([pred.out, pred.varValues!]);
  });

  test("cfg-rescale at φ = 0 is cfg exactly", () => {
    const a = sampleWith({ kind: "cfg-rescale", scale: 4, phi: 0 }, "ddpm");
    const b = sampleWith({ kind: "cfg", scale: 4 }, "ddpm");
    assert.deepEqual(a.out, b.out);
  });

  test("cfg at s = 1 is the conditional model, one call per step", () => {
    const a = sampleWith({ kind: "cfg", scale: 1 }, "ddpm");
    const b = sampleWith({ kind: "none" }, "ddpm");
    assert.deepEqual(a.out, b.out);
    assert.equal(a.counted.model, diffusion.numTimesteps * B);
    const c = sampleWith({ kind: "cfg", scale: 3 }, "ddpm");
    assert.equal(c.counted.model, 2 * diffusion.numTimesteps * B);
  });

  test("autoguidance: eps_w + s·(eps − eps_w)", () => {
    const s = 2;
    const { pred, x } = denoiseOnce({ kind: "autoguidance", scale: s });
    const got = pred.out.dataSync();
    for (let b = 0; b < B; b++) {
      const xb = Float32Array.from(sampleRows(x, b));
      const m = fakeEps(PROMPTS[b]!, xb);
      const w = fakeEps(PROMPTS[b]!, xb, 7);
      assertClose(
        sampleRows(got, b),
        Array.from(m, (v, i) => w[i]! + s * (v - w[i]!)),
        1e-5,
        "autoguidance",
      );
    }
    tf.dispose([pred.out, pred.varValues!]);
  });

  test("apg: projection of the x0 update, with η, norm threshold and momentum", () => {
    const cfg = { kind: "apg", scale: 3, eta: 0.25, normThreshold: 2, momentum: -0.5 };
    const g = buildStrategy(cfg, fakeModels()).bind(PROMPTS);
    const x = xT();
    const xs = x.dataSync() as Float32Array;
    const ab = diffusion.alphasCumprod;
    const toX0 = (eps: Float64Array, xb: Float32Array, index: number) =>
      Array.from(xb, (v, i) => Math.sqrt(1 / ab[index]!) * v - Math.sqrt(1 / ab[index]! - 1) * eps[i]!);
    const prev: number[][] = [[], []];
    try {
      // Two consecutive steps so that the momentum term matters.
      for (const step of [
        { index: 3, t: 99, k: 0 },
        { index: 2, t: 66, k: 1 },
      ]) {
        const pred = g.denoise(x, step);
        assert.equal(pred.kind, "x0");
        const got = pred.out.dataSync();
        for (let b = 0; b < B; b++) {
          const xb = Float32Array.from(sampleRows(xs, b));
          const dc = toX0(fakeEps(PROMPTS[b]!, xb), xb, step.index);
          const du = toX0(fakeEps("", xb), xb, step.index);
          let delta = dc.map((v, i) => v - du[i]!);
          if (prev[b]!.length) delta = delta.map((v, i) => v + cfg.momentum * prev[b]![i]!);
          prev[b] = delta;
          const nrm = (a: number[]) => Math.sqrt(a.reduce((p, v) => p + v * v, 0));
          const f = Math.min(1, cfg.normThreshold / nrm(delta));
          const d = delta.map((v) => v * f);
          const unit = dc.map((v) => v / nrm(dc));
          const dot = d.reduce((p, v, i) => p + v * unit[i]!, 0);
          const par = unit.map((v) => dot * v);
          const want = dc.map((v, i) => v + (cfg.scale - 1) * (d[i]! - par[i]! + cfg.eta * par[i]!));
          assertClose(sampleRows(got, b), want, 2e-3, `apg step ${step.k} sample ${b}`);
        }
        tf.dispose([pred.out, pred.varValues!]);
      }
    } finally {
      x.dispose();
      g.dispose();
    }
  });

  test("cfg++: one DDIM step lands on sqrt(ᾱ')·x0_λ + sqrt(1 − ᾱ')·eps_u", () => {
    const lambda = 0.6;
    const g = buildStrategy({ kind: "cfg++", scale: lambda }, fakeModels()).bind(PROMPTS);
    const x = xT();
    try {
      const index = 2;
      const { sample, predXstart } = ddimStep(diffusion, g.denoise, x, index, {
        clipDenoised: false,
        eta: 0,
      });
      const got = sample.dataSync();
      tf.dispose([sample, predXstart]);
      const xs = x.dataSync() as Float32Array;
      const ab = diffusion.alphasCumprod[index]!;
      const abp = diffusion.alphasCumprodPrev[index]!;
      for (let b = 0; b < B; b++) {
        const xb = Float32Array.from(sampleRows(xs, b));
        const c = fakeEps(PROMPTS[b]!, xb);
        const u = fakeEps("", xb);
        const want = Array.from(xb, (v, i) => {
          const el = u[i]! + lambda * (c[i]! - u[i]!);
          const x0 = (v - Math.sqrt(1 - ab) * el) / Math.sqrt(ab);
          return Math.sqrt(abp) * x0 + Math.sqrt(1 - abp) * u[i]!;
        });
        assertClose(sampleRows(got, b), want, 1e-4, "cfg++");
      }
    } finally {
      x.dispose();
      g.dispose();
    }
  });

  test("dynamic thresholding: per-sample quantile of |x0|, clamp and divide", () => {
    const data = Float32Array.from({ length: 2 * 4 * 4 * 3 }, (_, i) => 3 * Math.sin(i * 1.7));
    data.fill(0.1, 48); // second sample stays inside [−1, 1]: s = max(q, 1) = 1, an identity
    const x0 = tf.tensor4d(data, [2, 4, 4, 3]);
    const p = 0.9;
    const n = 48;
    const sorted = Array.from(data.slice(0, n), Math.abs).sort((a, b) => a - b);
    const pos = p * (n - 1);
    const lo = Math.floor(pos);
    const q = sorted[lo]! + (pos - lo) * (sorted[lo + 1]! - sorted[lo]!);
    const qs = absQuantile(x0, p);
    assertClose([qs.dataSync()[0]!], [q], 1e-5, "quantile");
    const out = dynamicThreshold(p)(x0, STEP);
    const got = out.dataSync();
    const s = Math.max(q, 1);
    assertClose(
      Array.from(got).slice(0, n),
      Array.from(data.slice(0, n), (v) => Math.min(Math.max(v, -s), s) / s),
      1e-5,
      "threshold",
    );
    assertClose(Array.from(got).slice(n), Array.from(data.slice(n)), 0, "identity when s = 1");
    tf.dispose([x0, qs, out]);
  });

  test("the guidance window: cfg outside [tMin, tMax] makes the single conditional call", () => {
    const counter = zeroCounter();
    const g = buildStrategy(
      { kind: "cfg", scale: 3, tMin: 50, tMax: 80 },
      fakeModels({ model: fakeModel(counter) }),
    ).bind(PROMPTS);
    const x = xT();
    try {
      const inside = g.denoise(x, STEP);
      assert.equal(counter.model, 2 * B);
      const outside = g.denoise(x, { index: 3, t: 99, k: 0 });
      assert.equal(counter.model, 3 * B);
      assert.deepEqual(g.calls({ index: 3, t: 99, k: 0 }).model, 1);
      assert.deepEqual(g.calls(STEP).model, 2);
      const plain = fakeModel()(x, tf.fill([B], 99, "int32") as Tensor1D, encode(PROMPTS));
      assert.deepEqual(outside.out.dataSync(), plain.out.dataSync());
      tf.dispose([
        inside.out,
        inside.varValues!,
        outside.out,
        outside.varValues!,
        plain.out,
        plain.varValues!,
      ]);
    } finally {
      x.dispose();
      g.dispose();
    }
  });
});

// ---------------------------------------------------------------- gradient guidance does its job

describe("gradient guidance raises its objective over unguided sampling", () => {
  const final = (raw: unknown, sampler: "ddpm" | "ddim" = "ddpm") =>
    tf.tensor4d(sampleWith(raw, sampler, PROMPTS, 5).out, [B, SIZE, SIZE, 3]);

  function meanLogP(x: Tensor4D): number {
    return tf.tidy(() => {
      const logp = tf.logSoftmax(classifier.logits(x, tf.zeros([B], "int32") as Tensor1D));
      const y = tf.oneHot(tf.tensor1d(PROMPTS.map(labelOf), "int32"), NUM_CLASSES);
      return tf.sum(tf.mul(logp, y)).dataSync()[0]! / B;
    });
  }

  function meanSim(x: Tensor4D): number {
    return tf.tidy(() => {
      const zi = clip.embedImage(x, tf.zeros([B], "int32") as Tensor1D);
      return tf.sum(tf.mul(zi, clipText(PROMPTS))).dataSync()[0]! / B;
    });
  }

  for (const sampler of ["ddpm", "ddim"] as const) {
    test(`classifier (${sampler}): log p(y | x_0) goes up`, (tc) => {
      const plain = final({ kind: "none" }, sampler);
      const guided = final({ kind: "classifier", scale: 30 }, sampler);
      const [a, b] = [meanLogP(plain), meanLogP(guided)];
      tc.diagnostic(`log p(y|x0): unguided ${a.toFixed(4)}, guided ${b.toFixed(4)}`);
      assert.ok(b > a, `guided ${b} should exceed unguided ${a}`);
      tf.dispose([plain, guided]);
    });
  }

  test("clip: noised-CLIP similarity goes up", (tc) => {
    const plain = final({ kind: "none" });
    const guided = final({ kind: "clip", scale: 0.5 });
    const [a, b] = [meanSim(plain), meanSim(guided)];
    tc.diagnostic(`similarity: unguided ${a.toFixed(4)}, guided ${b.toFixed(4)}`);
    assert.ok(b > a, `guided ${b} should exceed unguided ${a}`);
    tf.dispose([plain, guided]);
  });

  test("composition: clip on top of cfg adds the CLIP call to cfg's two", () => {
    const r = sampleWith({ kind: "clip", scale: 0.5, base: { kind: "cfg", scale: 3 } }, "ddpm");
    const steps = diffusion.numTimesteps;
    assert.deepEqual(r.counted, { model: 2 * steps * B, weak: 0, classifier: 0, clip: steps * B });
  });
});

// ---------------------------------------------------------------- errors

describe("bad configs and missing models give errors that name the key", () => {
  test("unknown kind", () => {
    assert.throws(
      () => parseStrategyConfig({ kind: "cfgg" }),
      /kind: unknown strategy 'cfgg' \(known: none,/,
    );
    assert.throws(() => parseStrategyConfig({ scale: 3 }), /kind: required/);
  });

  test("negative and out-of-range scales", () => {
    assert.throws(() => parseStrategyConfig({ kind: "cfg", scale: -1 }), /'cfg': scale: Too small/);
    assert.throws(() => parseStrategyConfig({ kind: "classifier", scale: -0.5 }), /scale: Too small/);
    assert.throws(() => parseStrategyConfig({ kind: "cfg++", scale: 1.5 }), /scale: Too big/);
    assert.throws(() => parseStrategyConfig({ kind: "cfg-rescale", phi: 2 }), /phi: Too big/);
  });

  test("unknown keys, nested configs and empty windows", () => {
    assert.throws(() => parseStrategyConfig({ kind: "cfg", sclae: 3 }), /sclae: unknown key/);
    assert.throws(
      () => parseStrategyConfig({ kind: "clip", base: { kind: "cfg", scale: -2 } }),
      /base\.scale: Too small/,
    );
    assert.throws(() => parseStrategyConfig({ kind: "clip", base: { kind: "nope" } }), /base\.kind/);
    assert.throws(
      () => parseStrategyConfig({ kind: "cfg", tMin: 500, tMax: 100 }),
      /tMax: tMax \(100\) must be/,
    );
  });

  test("a strategy whose model is missing", () => {
    const models = fakeModels();
    assert.throws(
      () => buildStrategy({ kind: "classifier" }, models),
      /'classifier': needs models\.classifier/,
    );
    assert.throws(() => buildStrategy({ kind: "clip" }, models), /'clip': needs models\.clip/);
    const { weak: _weak, diffusion: _d, ...noWeak } = models;
    assert.throws(() => buildStrategy({ kind: "autoguidance" }, noWeak), /needs models\.weak/);
    assert.throws(() => buildStrategy({ kind: "apg" }, noWeak), /needs models\.diffusion/);
    // The neutral setting needs no extra model.
    assert.doesNotThrow(() => buildStrategy({ kind: "classifier", scale: 0 }, models));
  });
});
