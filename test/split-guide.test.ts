// Guidance gradients split between this thread and a worker (src/zoo/split-guide.ts): the same values as the
// one-thread gradient, for the classifier and the noised CLIP, at even, odd and single-row batches; no tensor left
// behind; a worker that cannot load its model is an error naming the model, not a hang.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { initEngine, type Tensor1D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { runSweep } from "../src/sweep/runner.ts";
import { SplitGuide } from "../src/zoo/split-guide.ts";
import { defaultGuideThreads, loadZoo, type Zoo } from "../src/zoo/zoo.ts";
import { makeTinyZoo } from "./helpers/tiny-zoo.ts";

const dir = mkdtempSync(join(tmpdir(), "gl-split-"));
let models = "";
let one: Zoo;
let two: Zoo;

before(async () => {
  await initEngine("wasm", { quiet: true });
  models = await makeTinyZoo(dir, ["denoiser", "classifier", "noised-clip"]);
  one = loadZoo({}, models, "tfjs");
  two = loadZoo({}, models, "tfjs", { guideThreads: 2 });
});

after(() => {
  one.dispose();
  two.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function maxRelErr(a: Tensor4D, b: Tensor4D): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]! / tf.max(tf.abs(a)).dataSync()[0]!);
}

describe("split guidance gradients", () => {
  test("classifier and CLIP gradients equal the one-thread ones (batches 5, 4 and 1)", () => {
    const init = new Init(4);
    for (const n of [5, 4, 1]) {
      const x = init.normal([n, 16, 16, 3], 1) as Tensor4D;
      const t = tf.tensor1d(
        Array.from({ length: n }, (_, i) => 100 + 190 * i),
        "int32",
      ) as Tensor1D;
      const y = tf.tensor1d(
        Array.from({ length: n }, (_, i) => (5 * i) % 24),
        "int32",
      ) as Tensor1D;
      const z = one.models.clipText!(
        Array.from({ length: n }, (_, i) => (i % 2 ? "a red circle" : "a square")),
      );
      const before = tf.memory().numTensors;
      try {
        for (const [what, a, b] of [
          [
            "classifier",
            one.models.classifier!.condGrad(x, t, y, 3),
            two.models.classifier!.condGrad(x, t, y, 3),
          ],
          ["clip", one.models.clip!.condGrad(x, t, z, 2), two.models.clip!.condGrad(x, t, z, 2)],
        ] as const) {
          assert.deepEqual(b.shape, a.shape, `${what} n=${n}: shape`);
          const err = maxRelErr(a, b);
          assert.ok(err <= 1e-6, `${what} n=${n}: relative error ${err}`);
          assert.ok(
            tf.tidy(() => tf.max(tf.abs(a)).dataSync()[0]!) > 0,
            `${what} n=${n}: a non-zero gradient`,
          );
          tf.dispose([a, b]);
        }
        assert.equal(tf.memory().numTensors, before, `n=${n}: no tensor left behind`);
      } finally {
        tf.dispose([x, t, y, z]);
      }
    }
  });

  test("a sweep with split gradients still reads the classifier and CLIP forwards for its metrics", async () => {
    const saved = {
      models: process.env.GUIDANCE_LAB_MODELS,
      threads: process.env.GUIDANCE_LAB_GUIDE_THREADS,
    };
    process.env.GUIDANCE_LAB_MODELS = models;
    process.env.GUIDANCE_LAB_GUIDE_THREADS = "2";
    try {
      const config = join(dir, "split.yaml");
      writeFileSync(
        config,
        `prompts: ["a red circle", "a blue square"]
strategies: [{ kind: classifier, scales: [2] }, { kind: clip, scales: [2] }]
steps: [2]
samplesPerPrompt: 2
metrics: [clip_score_guidance, inception_score, cost]
`,
      );
      const out = join(dir, "split-run");
      const r = await runSweep(config, { out, runtime: "tfjs", quiet: true });
      assert.equal(r.finished.length, 2, "both cells ran");
      const [header, ...rows] = readFileSync(r.csvPath, "utf8").trim().split("\n");
      const cols = header!.split(",");
      for (const m of ["clip_score_guidance", "is"]) {
        const i = cols.indexOf(m);
        assert.ok(i >= 0, `results.csv has ${m}`);
        for (const row of rows)
          assert.ok(Number.isFinite(Number(row.split(",")[i])), `${m} is a number: ${row}`);
      }
    } finally {
      for (const [k, v] of [
        ["GUIDANCE_LAB_MODELS", saved.models],
        ["GUIDANCE_LAB_GUIDE_THREADS", saved.threads],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  test("a worker that cannot load its model fails the call with the model's name", () => {
    const broken = new SplitGuide<Tensor1D>(one.models.classifier!, "no-such-classifier", models);
    const x = tf.zeros([2, 16, 16, 3]) as Tensor4D;
    const t = tf.tensor1d([1, 2], "int32") as Tensor1D;
    const y = tf.tensor1d([0, 1], "int32") as Tensor1D;
    try {
      assert.throws(() => broken.condGrad(x, t, y, 1), /split guidance worker: .*no-such-classifier/);
    } finally {
      broken.dispose();
      tf.dispose([x, t, y]);
    }
  });

  test("GUIDANCE_LAB_GUIDE_THREADS overrides the default, and a bad value is named", () => {
    const saved = process.env.GUIDANCE_LAB_GUIDE_THREADS;
    try {
      process.env.GUIDANCE_LAB_GUIDE_THREADS = "1";
      assert.equal(defaultGuideThreads(), 1);
      process.env.GUIDANCE_LAB_GUIDE_THREADS = "2";
      assert.equal(defaultGuideThreads(), 2);
      process.env.GUIDANCE_LAB_GUIDE_THREADS = "4";
      assert.throws(() => defaultGuideThreads(), /GUIDANCE_LAB_GUIDE_THREADS=4: expected 1 or 2/);
    } finally {
      if (saved === undefined) delete process.env.GUIDANCE_LAB_GUIDE_THREADS;
      else process.env.GUIDANCE_LAB_GUIDE_THREADS = saved;
    }
  });
});
