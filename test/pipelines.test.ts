// The GLIDE and guided-diffusion pipelines end to end: on the golden small weights (2 steps, batch 1–2: shapes,
// determinism under a seed, no leaked tensors) and on tiny random upsampler / inpainting configs built here, plus
// known-region replacement keeping the known pixels.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { benchGlide } from "../src/bench/glide.ts";
import { createDiffusion } from "../src/core/diffusion.ts";
import { backendFromEnv, initEngine, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { defaultGoldenDir } from "../src/core/paths.ts";
import { unetModel } from "../src/nets/denoiser.ts";
import type { UNetConfig, UNet as UNetT } from "../src/nets/unet.ts";
import { UNet } from "../src/nets/unet.ts";
import { onnxUnavailable } from "../src/onnx/runtime.ts";
import { glideClipGuided, glideInpaint, glideText2Im } from "../src/pipelines/glide.ts";
import { classifierGuidedSample } from "../src/pipelines/guided-diffusion.ts";
import { sampleGuided } from "../src/pipelines/sampling.ts";
import { buildStrategy } from "../src/strategies/registry.ts";
import { type Manifest, SectionContext } from "../src/verify/common.ts";
import { goldenClassifier, goldenClip, goldenGdUnet, goldenGlide } from "../src/verify/golden-models.ts";
import { tinyUNetConfig } from "./helpers/tiny-unet.ts";

const GOLDEN = defaultGoldenDir();
const present = existsSync(join(GOLDEN, "manifest.json")) && existsSync(join(GOLDEN, "weights"));
const skipGolden = present ? false : `golden weights not found at ${GOLDEN} (set GUIDANCE_LAB_GOLDEN)`;

before(async () => {
  await initEngine(backendFromEnv(), { quiet: true });
});

const host = (t: Tensor4D) => t.dataSync() as Float32Array;
const maxAbsDiff = (a: Float32Array, b: Float32Array) =>
  a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const finite = (a: Float32Array) => a.every(Number.isFinite);

/** Runs `fn` twice and checks: same result bits, and no tensor left behind once the results are disposed. */
function deterministicNoLeak(label: string, fn: () => Tensor4D[]): Float32Array[] {
  const before = tf.memory().numTensors;
  const a = fn();
  const b = fn();
  const ha = a.map(host);
  const hb = b.map(host);
  tf.dispose([...a, ...b]);
  for (const [i, x] of ha.entries()) {
    assert.ok(finite(x), `${label}: output ${i} has non-finite values`);
    assert.deepEqual(x, hb[i], `${label}: output ${i} differs between two runs with the same seed`);
  }
  assert.equal(tf.memory().numTensors, before, `${label}: tensors leaked`);
  return ha;
}

// Token ids for tests without BPE files: any small ids do (the vocabularies are not shipped).
const ids = (vocab: number) => (p: string) => [...p].map((c) => (c.charCodeAt(0) * 7) % (vocab - 1));

describe("GLIDE pipelines on the golden small weights", { skip: skipGolden }, () => {
  let ctx: SectionContext;
  let glide: UNetT;
  let prompts: string[];
  let glideIds: Map<string, number[]>;
  before(() => {
    const manifest = JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8")) as Manifest;
    ctx = new SectionContext(GOLDEN, "pipelines", manifest);
    glide = goldenGlide(ctx);
    const cases = (manifest.meta!.tokenizers as { cases: { prompt: string; glide_bpe: number[] }[] }).cases;
    glideIds = new Map(cases.map((c) => [c.prompt, c.glide_bpe]));
    prompts = manifest.meta!.prompts as string[];
  });
  after(() => glide.dispose());
  const text = (p: string) => glideIds.get(p) ?? [];

  test("text2im with classifier-free guidance: 2 steps, 1 prompt (batch 2 per forward), deterministic", () => {
    let nfe = 0;
    const [base] = deterministicNoLeak("cfg text2im", () => {
      const r = glideText2Im({
        base: glide,
        text,
        prompts: prompts.slice(0, 1),
        strategy: { kind: "cfg", scale: 3 },
        respacing: "2",
        seed: 7,
      });
      nfe = r.nfe.base;
      return [r.base];
    });
    assert.equal(base!.length, 64 * 64 * 3, "one 64×64×3 sample");
    assert.equal(nfe, 4, "cfg: 2 evaluations per step over 2 steps");
  });

  test("CLIP-guided GLIDE (noised CLIP, clip strategy): 2 steps, batch 1", () => {
    const clip = goldenClip(ctx);
    try {
      let nfe = 0;
      deterministicNoLeak("clip-guided", () => {
        const r = glideClipGuided({
          base: glide,
          text,
          clip: { model: clip, text: ids(clip.config.nVocab - 2) },
          prompts: prompts.slice(0, 1),
          respacing: "2",
          seed: 3,
        });
        nfe = r.nfe.base;
        return [r.base];
      });
      assert.equal(nfe, 4, "clip: 1 model + 1 CLIP gradient per step");
    } finally {
      clip.dispose();
    }
  });

  test("classifier-guided guided-diffusion sampling: 2 steps, batch 2", () => {
    const unet = goldenGdUnet(ctx);
    const classifier = goldenClassifier(ctx);
    try {
      const diffusion = createDiffusion({
        schedule: "cosine",
        steps: 1000,
        respacing: "2",
        modelVarType: "learned_range",
      });
      const run = (scale: number) =>
        classifierGuidedSample({ unet, classifier, labels: [1, 7], scale, diffusion, seed: 5 });
      let nfe = 0;
      const [guided] = deterministicNoLeak("classifier-guided", () => {
        const r = run(1);
        nfe = r.nfe;
        assert.deepEqual(r.samples.shape, [2, 64, 64, 3], "samples [2, 64, 64, 3]");
        return [r.samples];
      });
      assert.equal(nfe, 4, "classifier: 1 model + 1 classifier gradient per step");
      const plain = run(0);
      const d = maxAbsDiff(guided!, host(plain.samples));
      plain.samples.dispose();
      assert.ok(d > 0, "the classifier gradient changes the samples");
    } finally {
      unet.dispose();
      classifier.dispose();
    }
  });
});

// ------------------------------------------------------------------------------------------ tiny random configs

const VOCAB = 64;
const tinyConfig = (extra: Partial<UNetConfig>): UNetConfig =>
  tinyUNetConfig({ vocabSize: VOCAB, ctx: 8 }, extra);

describe("GLIDE pipelines on tiny random upsampler / inpainting configs", () => {
  let base: UNetT;
  let upsampler: UNetT;
  let inpaint: UNetT;
  let upInpaint: UNetT;
  before(() => {
    const init = new Init(11);
    base = new UNet(init, tinyConfig({}));
    upsampler = new UNet(init, tinyConfig({ imageSize: 16, superRes: true }));
    inpaint = new UNet(init, tinyConfig({ inpaint: true }));
    upInpaint = new UNet(init, tinyConfig({ imageSize: 16, superRes: true, inpaint: true }));
  });
  after(() => {
    for (const m of [base, upsampler, inpaint, upInpaint]) m.dispose();
  });
  const text = ids(VOCAB);
  const prompts = ["a red cube", "a blue sphere"];

  /** An image in [-1, 1] and a mask keeping the left half. */
  const knownOf = (s: number) =>
    tf.tidy(() => {
      const image = tf.sub(tf.mul(tf.randomUniform([1, s, s, 3], 0, 1, "float32", 1), 2), 1) as Tensor4D;
      const left = tf.concat([tf.ones([1, s, s / 2, 1]), tf.zeros([1, s, s / 2, 1])], 2) as Tensor4D;
      return { image, mask: left };
    });
  /** Max |x − image| over the known pixels of every sample. */
  const knownError = (x: Tensor4D, image: Tensor4D, mask: Tensor4D) =>
    tf.tidy(() => tf.max(tf.abs(tf.mul(tf.sub(x, image), mask))).dataSync()[0]!);

  test("text2im → upsampler (fast27-style respacing, temperature 0.997), deterministic", () => {
    let up: number[] = [];
    const [b, u] = deterministicNoLeak("text2im + upsample", () => {
      const r = glideText2Im({
        base,
        text,
        prompts,
        respacing: "3",
        seed: 1,
        upsample: { model: upsampler, respacing: "3" },
      });
      up = [...r.upsampled!.shape];
      return [r.base, r.upsampled!];
    });
    assert.deepEqual(up, [2, 16, 16, 3], "upsampled [2, 16, 16, 3]");
    assert.equal(b!.length, 2 * 8 * 8 * 3, "base [2, 8, 8, 3]");
    assert.ok(
      u!.every((v) => v >= -1 - 1e-6 && v <= 1 + 1e-6),
      "samples stay in [-1, 1] at the end",
    );
  });

  // Plumbing that the weights do not change (the sampler's table, step count and evaluations per step, determinism,
  // no leak): on the tiny model, where the golden GLIDE small took 26 s of the suite for the same checks.
  test("GLIDE's pipeline takes the σ-space samplers: the respacing's step count, NFE per evaluation", () => {
    for (const [sampler, evals] of [
      ["dpmpp_2m", 2],
      ["heun", 3],
    ] as const) {
      let nfe = 0;
      deterministicNoLeak(`cfg text2im ${sampler}`, () => {
        const r = glideText2Im({
          base,
          text,
          prompts: prompts.slice(0, 1),
          strategy: { kind: "cfg", scale: 3 },
          respacing: "2",
          sampler,
          schedule: "karras",
          seed: 7,
        });
        nfe = r.nfe.base;
        return [r.base];
      });
      assert.equal(nfe, 2 * evals, `${sampler}: ${evals} evaluations of 2 rows over 2 steps`);
    }
    assert.throws(
      () => glideText2Im({ base, text, prompts: ["a"], strategy: { kind: "cfg++" }, respacing: "2" }),
      /base sampler: strategy 'cfg\+\+' is defined for ddim \(eta 0\), euler, euler_ancestral, dpmpp_2m only, not ddpm/,
    );
  });

  test("upsampler default respacing is fast27 and its x_T is scaled by 0.997", () => {
    let steps = 0;
    const r = glideText2Im({
      base,
      text,
      prompts: prompts.slice(0, 1),
      respacing: "1",
      upsample: { model: upsampler },
      onStep: (stage, info) => {
        if (stage === "upsampler" && info.k === 0) steps = info.total;
      },
    });
    r.dispose();
    assert.equal(steps, 27, "fast27 has 27 steps");
  });

  for (const mode of ["x0", "xt"] as const) {
    test(`inpainting model keeps the known pixels (${mode} replacement), with cfg`, () => {
      const { image, mask } = knownOf(8);
      try {
        const [out] = deterministicNoLeak(`inpaint ${mode}`, () => {
          const r = glideInpaint({
            model: inpaint,
            text,
            prompts,
            image,
            mask,
            mode,
            respacing: "3",
            seed: 2,
          });
          return [r.base];
        });
        const x = tf.tensor4d(out!, [2, 8, 8, 3]);
        const err = knownError(x, image, mask);
        const free = tf.tidy(() => tf.max(tf.abs(tf.mul(tf.sub(x, image), tf.sub(1, mask)))).dataSync()[0]!);
        x.dispose();
        // x0 mode: the last posterior mean is coef1·x0 with coef1 = 1 up to float32 rounding.
        assert.ok(
          err <= (mode === "xt" ? 0 : 1e-6),
          `known pixels equal the image at t = 0 (max error ${err})`,
        );
        assert.ok(free > 1e-3, "the unknown pixels are generated, not copied");
      } finally {
        tf.dispose([image, mask]);
      }
    });
  }

  test("inpainting upsampler (inpaint + super-res inputs) keeps the known pixels", () => {
    const k8 = knownOf(8);
    const k16 = knownOf(16);
    try {
      const [, up] = deterministicNoLeak("inpaint + upsample", () => {
        const r = glideInpaint({
          model: inpaint,
          text,
          prompts: prompts.slice(0, 1),
          image: k8.image,
          mask: k8.mask,
          respacing: "2",
          upsample: { model: upInpaint, respacing: "2", known: { ...k16, mode: "x0" } },
        });
        return [r.base, r.upsampled!];
      });
      const x = tf.tensor4d(up!, [1, 16, 16, 3]);
      const err = knownError(x, k16.image, k16.mask);
      x.dispose();
      assert.ok(err <= 1e-6, `upsampled known pixels equal the image (max error ${err})`);
    } finally {
      tf.dispose([k8.image, k8.mask, k16.image, k16.mask]);
    }
  });

  test("runtime onnx: text2im → upsampler and inpainting + inpainting upsampler agree with TensorFlow.js", async (t) => {
    const why = await onnxUnavailable();
    if (why) return t.skip(`onnxruntime-node cannot load: ${why}`);
    const k8 = knownOf(8);
    const k16 = knownOf(16);
    const run = (runtime: "tfjs" | "onnx") => {
      const a = glideText2Im({
        base,
        text,
        prompts,
        respacing: "3",
        seed: 1,
        runtime,
        upsample: { model: upsampler, respacing: "3" },
      });
      const b = glideInpaint({
        model: inpaint,
        text,
        prompts: prompts.slice(0, 1),
        image: k8.image,
        mask: k8.mask,
        respacing: "2",
        runtime,
        upsample: { model: upInpaint, respacing: "2", known: { ...k16, mode: "x0" } },
      });
      const out = [a.base, a.upsampled!, b.base, b.upsampled!].map(host);
      a.dispose();
      b.dispose();
      return out;
    };
    try {
      const before = tf.memory().numTensors;
      const ref = run("tfjs");
      const got = run("onnx");
      assert.equal(tf.memory().numTensors, before, "tensors leaked");
      for (const [i, g] of got.entries()) {
        const d = maxAbsDiff(g, ref[i]!);
        assert.ok(d < 1e-4, `output ${i}: ONNX Runtime and TensorFlow.js differ by ${d}`);
      }
    } finally {
      tf.dispose([k8.image, k8.mask, k16.image, k16.mask]);
    }
  });

  test("known-region replacement alone works for any model (a plain text model) through sampleGuided", () => {
    const { image, mask } = knownOf(8);
    const diffusion = createDiffusion({
      schedule: "linear",
      steps: 1000,
      respacing: "3",
      modelVarType: "learned_range",
    });
    const before = tf.memory().numTensors;
    const strategy = buildStrategy(
      { kind: "cfg", scale: 2 },
      {
        model: unetModel(base),
        encode: (ps) => ({
          tokens: tf.tensor2d(
            ps.map((p) => Array.from({ length: 8 }, (_, i) => text(p)[i] ?? VOCAB - 1)),
            [ps.length, 8],
            "int32",
          ),
          mask: tf.tensor2d(
            ps.map((p) => Array.from({ length: 8 }, (_, i) => (i < p.length ? 1 : 0))),
            [ps.length, 8],
          ),
        }),
      },
    );
    const binding = strategy.bind(prompts);
    const xT = tf.randomNormal([2, 8, 8, 3], 0, 1, "float32", 4) as Tensor4D;
    try {
      const { sample, nfe } = sampleGuided(diffusion, binding, xT, { known: { image, mask, mode: "xt" } });
      assert.equal(nfe, 6, "cfg: 2 evaluations × 3 steps");
      assert.equal(knownError(sample, image, mask), 0, "known pixels are the image exactly");
      sample.dispose();
    } finally {
      binding.dispose();
      tf.dispose([xT]);
    }
    assert.equal(tf.memory().numTensors, before, "sampleGuided leaks no tensor");
    tf.dispose([image, mask]);
  });
});

describe("benchGlide", { skip: skipGolden }, () => {
  test("rows for the forward and cfg sampling (batch 2, 1 step, no minimum time)", async () => {
    const before = tf.memory().numTensors;
    const rows = await benchGlide({ batch: 2, steps: 1, minMs: 0 });
    assert.deepEqual(
      rows.map((r) => r.unit),
      ["GFLOP/s", "step/s"],
      "one forward row and one sampling row (one runtime: TensorFlow.js)",
    );
    for (const r of rows) assert.ok(r.value > 0 && r.ms > 0, `${r.name}: positive timing`);
    // Timings recorded on another CPU (the golden manifest's) compare nothing: no row may quote them.
    for (const r of rows)
      assert.doesNotMatch(r.detail, /PyTorch|golden manifest/, `${r.name}: no recorded figure`);
    assert.equal(tf.memory().numTensors, before, "benchGlide leaks no tensor");
  });
});
