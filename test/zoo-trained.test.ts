// The shipped zoo (models/): the paper's gradient guides do their job on the trained models, on the same seeds.
// Skipped, with the reason, until models/ holds the denoiser, the noised classifier and the noised CLIP.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { initEngine, type Tensor1D, type Tensor4D, tf } from "../src/core/engine.ts";
import { seededNoise } from "../src/core/samplers.ts";
import { labelForPrompt, NUM_CLASSES } from "../src/data/world.ts";
import type { ClipModel } from "../src/nets/clip.ts";
import type { EncoderUNet } from "../src/nets/encoder-unet.ts";
import { sampleGuided } from "../src/pipelines/sampling.ts";
import { buildStrategy } from "../src/strategies/registry.ts";
import { runSweep } from "../src/sweep/runner.ts";
import { listModels } from "../src/zoo/registry.ts";
import { loadZoo, type Zoo } from "../src/zoo/zoo.ts";

const NEEDED = ["denoiser", "classifier", "noised-clip"];
const shipped = new Set(listModels().map((m) => m.name));
const missing = NEEDED.filter((n) => !shipped.has(n));
const PROMPTS = ["a red circle", "a blue square", "a green triangle", "a magenta circle"];
const STEPS = 25;

describe("trained zoo: gradient guidance raises its objective over unguided sampling (same seeds)", () => {
  let zoo: Zoo;
  // The unguided samples every test compares with: the same seeds, so sampled once (the tests only read them).
  let plain: Tensor4D | undefined;
  before(async () => {
    if (missing.length) return;
    await initEngine("wasm", { quiet: true });
    zoo = loadZoo();
    plain = final({ kind: "unconditional" });
  });
  after(() => plain?.dispose());

  function final(raw: unknown): Tensor4D {
    const diffusion = zoo.diffusion(String(STEPS));
    const binding = buildStrategy(raw, { ...zoo.models, diffusion }, "test").bind(PROMPTS);
    const s = zoo.imageSize;
    const xT = seededNoise("zoo-trained:xT")(0, [PROMPTS.length, s, s, 3]);
    const { sample } = sampleGuided(diffusion, binding, xT, { noise: seededNoise("zoo-trained") });
    xT.dispose();
    binding.dispose();
    return sample;
  }

  test("classifier: mean log p(y | x_0) of the prompts' labels goes up", { timeout: 300_000 }, (tc) => {
    if (missing.length) return tc.skip(`models/ lacks ${missing.join(", ")}`);
    const classifier = zoo.models.classifier as EncoderUNet;
    const logP = (x: Tensor4D) =>
      tf.tidy(() => {
        const lp = tf.logSoftmax(classifier.logits(x, tf.zeros([x.shape[0]], "int32") as Tensor1D));
        const y = tf.oneHot(
          tf.tensor1d(
            PROMPTS.map((p) => labelForPrompt(p)!),
            "int32",
          ),
          NUM_CLASSES,
        );
        return tf.sum(tf.mul(lp, y)).dataSync()[0]! / PROMPTS.length;
      });
    const before = tf.memory().numTensors;
    // From the unconditional model, so the classifier has the whole prompt to supply: on the conditional model the
    // trained denoiser is already right ~90% of the time and leaves the guide little to raise.
    const guided = final({ kind: "classifier", scale: 4, base: { kind: "unconditional" } });
    const [a, b] = [logP(plain!), logP(guided)];
    guided.dispose();
    tc.diagnostic(`log p(y|x0): unconditional ${a.toFixed(3)}, classifier-guided (s = 4) ${b.toFixed(3)}`);
    assert.ok(b > a, `guided ${b} should exceed unguided ${a}`);
    assert.equal(tf.memory().numTensors, before, "no tensor leak");
  });

  test("clip: the noised CLIP's similarity to the prompts goes up", { timeout: 300_000 }, (tc) => {
    if (missing.length) return tc.skip(`models/ lacks ${missing.join(", ")}`);
    const clip = zoo.models.clip as ClipModel;
    const sim = (x: Tensor4D) =>
      tf.tidy(() => {
        const zi = clip.embedImage(x, tf.zeros([x.shape[0]], "int32") as Tensor1D);
        return tf.sum(tf.mul(zi, zoo.models.clipText!(PROMPTS))).dataSync()[0]! / PROMPTS.length;
      });
    const guided = final({ kind: "clip", scale: 10, base: { kind: "unconditional" } });
    const [a, b] = [sim(plain!), sim(guided)];
    guided.dispose();
    tc.diagnostic(
      `cos(z_image, z_text): unconditional ${a.toFixed(4)}, CLIP-guided (s = 10) ${b.toFixed(4)}`,
    );
    assert.ok(b > a, `guided ${b} should exceed unguided ${a}`);
  });

  test("clean-clip: the clean CLIP's similarity to the prompts goes up, through the denoiser or not", {
    timeout: 600_000,
  }, (tc) => {
    if (missing.length) return tc.skip(`models/ lacks ${missing.join(", ")}`);
    if (!zoo.models.cleanClip) return tc.skip("models/ lacks clean-clip");
    const sim = (x: Tensor4D) =>
      tf.tidy(() => {
        const zi = zoo.models.cleanClip!.embedImage(x);
        return tf.sum(tf.mul(zi, zoo.models.cleanClipText!(PROMPTS))).dataSync()[0]! / PROMPTS.length;
      });
    const before = tf.memory().numTensors;
    const a = sim(plain!);
    for (const backprop of [true, false]) {
      const guided = final({ kind: "clean-clip", scale: 100, backprop, base: { kind: "unconditional" } });
      const b = sim(guided);
      guided.dispose();
      tc.diagnostic(
        `clean-CLIP cos: unconditional ${a.toFixed(4)}, clean-clip (s = 100, backprop ${backprop}) ${b.toFixed(4)}`,
      );
      assert.ok(b > a, `backprop ${backprop}: guided ${b} should exceed unguided ${a}`);
    }
    assert.equal(tf.memory().numTensors, before, "no tensor leak");
  });
});

test("a sweep whose prompt a strategy cannot serve fails before sampling, naming the entry", async (tc) => {
  if (missing.length) return tc.skip(`models/ lacks ${missing.join(", ")}`);
  const dir = mkdtempSync(join(tmpdir(), "gl-zoo-trained-"));
  try {
    const path = join(dir, "bad.yaml");
    // "a circle" names no colour, so it maps to no class of the classifier.
    writeFileSync(
      path,
      "prompts: [a red circle, a circle]\nstrategies:\n  - { kind: cfg, scales: [3] }\n  - { kind: classifier, scales: [1] }\nmetrics: [cost]\nruntime: tfjs\n",
    );
    const out = join(dir, "run");
    await assert.rejects(
      runSweep(path, { out, quiet: true }),
      /bad\.yaml: strategies\.1 \(classifier\): prompt 'a circle' names no single colour and shape/,
      "the classifier entry and the prompt are named",
    );
    assert.ok(!existsSync(join(out, "cells")), "no cell was sampled");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
