import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runSample } from "../src/cli/sample.ts";
import { createDiffusion } from "../src/core/diffusion.ts";
import { initEngine, type Tensor1D, type Tensor4D, tf } from "../src/core/engine.ts";
import { readPng, writePng } from "../src/data/png.ts";
import { onnxUnavailable } from "../src/onnx/runtime.ts";
import { listModels } from "../src/zoo/registry.ts";
import { epsFromV, loadZoo } from "../src/zoo/zoo.ts";
import { makeTinyZoo } from "./helpers/tiny-zoo.ts";

const dir = mkdtempSync(join(tmpdir(), "gl-zoo-"));
const models = join(dir, "models");
after(() => rmSync(dir, { recursive: true, force: true }));

before(async () => {
  await initEngine("wasm", { quiet: true });
  await makeTinyZoo(dir);
});

describe("zoo", () => {
  it("presents a v-predicting denoiser as ε (epsFromV), exactly, variance values passed through", () => {
    const d = createDiffusion({ schedule: "squaredcos_cap_v2", steps: 1000 });
    const t = [0, 500, 980, 999];
    const shape: [number, number, number, number] = [4, 2, 2, 3];
    tf.tidy(() => {
      const x0 = tf.randomUniform(shape, -1, 1, "float32", 1) as Tensor4D;
      const eps = tf.randomNormal(shape, 0, 1, "float32", 2) as Tensor4D;
      const xt = d.qSample(x0, t, eps);
      const v = d.vTarget(x0, t, eps);
      const varValues = tf.zeros(shape) as Tensor4D;
      const model = () => ({
        out: tf.clone(v) as Tensor4D,
        kind: "v" as const,
        varValues: tf.clone(varValues) as Tensor4D,
      });
      const before = tf.memory().numTensors;
      const p = epsFromV(model, d.alphasCumprod)(xt, tf.tensor1d(t, "int32") as Tensor1D, {});
      assert.equal(tf.memory().numTensors, before + 3, "only the prediction (ε, variance) and t are new");
      assert.equal(p.kind, "eps");
      const err = tf.max(tf.abs(tf.sub(p.out, eps))).dataSync()[0]!;
      assert.ok(err < 2e-5, `ε recovered to ${err}`);
      assert.ok(p.varValues, "variance values kept");
      // Through the sampler's x0 formula, even at t = 999 where √ᾱ ≈ 1.6e-3.
      const x0Back = d.predictXstartFromEps(xt, t, p.out);
      const x0Err = tf.max(tf.abs(tf.sub(x0Back, x0))).dataSync()[0]!;
      assert.ok(x0Err < 5e-3, `x0 recovered to ${x0Err}`);
      // A strategy keeps only what it needs of a prediction (cfg: the conditional half's variance) and lets its
      // tidy free the rest, the variance values included.
      const held = tf.memory().numTensors;
      const half = tf.tidy(() => {
        const q = epsFromV(model, d.alphasCumprod)(xt, tf.tensor1d(t, "int32") as Tensor1D, {});
        return tf.slice(q.varValues!, 0, 2);
      });
      half.dispose();
      assert.equal(tf.memory().numTensors, held, "an enclosing tidy frees the whole prediction");
    });
  });

  it("lists and loads a trained model by name; missing models are named", () => {
    const list = listModels(models);
    assert.deepEqual(
      list.map((m) => [m.name, m.task, m.step]),
      [["denoiser", "denoiser", 1]],
      "one model listed",
    );
    const zoo = loadZoo({}, models);
    assert.equal(zoo.imageSize, 16, "image size from the model's export");
    assert.equal(zoo.models.classifier, undefined, "no classifier shipped here");
    zoo.dispose();
    assert.throws(() => loadZoo({ denoiser: "nope" }, models), /model 'nope'.*known models: denoiser/);
  });

  it("samples PNGs with a strategy and frees its tensors", { timeout: 120_000 }, async () => {
    process.env.GUIDANCE_LAB_MODELS = models;
    const before = tf.memory().numTensors;
    const out = join(dir, "samples");
    const args = {
      model: "denoiser",
      prompt: "a red circle",
      strategy: "cfg",
      scale: 3,
      steps: 3,
      sampler: "ddpm" as const,
      eta: 0,
      n: 2,
      seed: 1,
      out,
    };
    await runSample(args);
    assert.equal(tf.memory().numTensors, before, "no tensor leak");
    assert.deepEqual(
      readdirSync(out).sort(),
      ["grid.png", "sample-000.png", "sample-001.png"],
      "images written",
    );
    await assert.rejects(runSample({ ...args, strategy: "classifier" }), /needs models\.classifier/);
    await assert.rejects(runSample({ ...args, strategy: "cfgg" }), /unknown strategy 'cfgg'/);
  });

  it("samples the same images with the denoiser on ONNX Runtime as on TensorFlow.js", {
    timeout: 120_000,
  }, async (t) => {
    const why = await onnxUnavailable();
    if (why) return t.skip(`onnxruntime-node does not load: ${why}`);
    process.env.GUIDANCE_LAB_MODELS = models;
    const args = {
      model: "denoiser",
      prompt: "a blue square",
      strategy: "cfg",
      scale: 3,
      steps: 3,
      sampler: "ddpm" as const,
      eta: 0,
      n: 2,
      seed: 5,
    };
    await runSample({ ...args, out: join(dir, "rt-tfjs"), runtime: "tfjs" });
    await runSample({ ...args, out: join(dir, "rt-onnx"), runtime: "onnx" });
    const a = readPng(join(dir, "rt-tfjs", "grid.png")).data;
    const b = readPng(join(dir, "rt-onnx", "grid.png")).data;
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    assert.ok(worst <= 1 / 255 + 1e-6, `max pixel difference ${worst * 255}/255`);
  });

  it("inpaints: keeps the init image where the mask is white, rejects a mask of the wrong size", {
    timeout: 120_000,
  }, async () => {
    process.env.GUIDANCE_LAB_MODELS = models;
    const init = new Float32Array(16 * 16 * 3).fill(0.2);
    const mask = new Float32Array(16 * 16 * 3);
    for (let i = 0; i < 16 * 8 * 3; i++) mask[i] = 1; // top half kept
    writePng(join(dir, "init.png"), init, 16);
    writePng(join(dir, "mask.png"), mask, 16);
    writePng(join(dir, "mask8.png"), new Float32Array(8 * 8 * 3), 8);
    const out = join(dir, "inpaint");
    const args = {
      model: "denoiser",
      prompt: "a red circle",
      strategy: "cfg",
      scale: 3,
      steps: 3,
      sampler: "ddpm" as const,
      eta: 0,
      n: 1,
      seed: 2,
      out,
      initImage: join(dir, "init.png"),
      mask: join(dir, "mask.png"),
    };
    await runSample(args);
    const img = readPng(join(out, "sample-000.png")).data;
    for (let i = 0; i < 16 * 8 * 3; i++)
      assert.ok(Math.abs(img[i]! - 0.2) < 2 / 255, `kept pixel ${i}: ${img[i]}`);
    await assert.rejects(
      runSample({ ...args, mask: join(dir, "mask8.png") }),
      /--mask .*8×8, the model makes 16×16/,
    );
    await assert.rejects(runSample({ ...args, mask: undefined }), /--init-image and --mask go together/);
  });
});
