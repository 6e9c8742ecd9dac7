// The runtime benchmarks' pieces: the analytic FLOP count against the official code's counter (golden manifest),
// forward and sampling rows on every runtime for a tiny UNet (finite, positive, no tensor left behind), and the
// --compare-torch preconditions naming what is missing.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { parse } from "yaml";
import { CELLS_CONFIG } from "../src/bench/cells.ts";
import { unetFlops } from "../src/bench/flops.ts";
import { benchQuickstart, QUICKSTART_CONFIG, quickstartSummary } from "../src/bench/quickstart.ts";
import { benchForward, benchSampling, runtimeSpecs } from "../src/bench/runtimes.ts";
import { torchMissing } from "../src/bench/torch.ts";
import { benchTraining } from "../src/bench/train.ts";
import { createDiffusion } from "../src/core/diffusion.ts";
import { initEngine, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { defaultGoldenDir, REPO_ROOT } from "../src/core/paths.ts";
import { glideConfigFromOfficial } from "../src/nets/configs.ts";
import { UNet } from "../src/nets/unet.ts";
import { loadSweepConfig, parseSweepConfig } from "../src/sweep/config.ts";
import { parseRecipe } from "../src/train/recipe.ts";
import { tinyUNetConfig } from "./helpers/tiny-unet.ts";
import { makeTinyZoo } from "./helpers/tiny-zoo.ts";

before(async () => {
  await initEngine("wasm", { quiet: true });
});

const tiny = tinyUNetConfig({ vocabSize: 20, ctx: 4 });

const GOLDEN = defaultGoldenDir();
const noManifest = existsSync(join(GOLDEN, "manifest.json")) ? false : `no golden manifest at ${GOLDEN}`;

describe("bench: FLOPs, runtimes, torch preconditions", () => {
  test("training-step rows for TensorFlow.js and ONNX Runtime are finite, positive and leave no tensor", async () => {
    const { onnxMissing } = await runtimeSpecs();
    const recipe = parseRecipe(
      {
        name: "tiny",
        task: "denoiser",
        steps: 1,
        model: {
          modelChannels: 32,
          channelMult: [1, 2],
          attentionResolutions: [8],
          xfWidth: 32,
          xfLayers: 1,
          xfHeads: 2,
        },
        world: { size: 16 },
      },
      "tiny",
    );
    const before = tf.memory().numTensors;
    const rows = await benchTraining(recipe, { batch: 2, minMs: 0, onnx: !onnxMissing });
    assert.equal(tf.memory().numTensors, before, "no tensor left behind");
    assert.equal(rows.length, onnxMissing ? 1 : 3);
    for (const r of rows)
      assert.ok(Number.isFinite(r.value) && r.value > 0 && r.unit === "img/s", JSON.stringify(r));
  });

  test("the FLOP count of GLIDE small at batch 4 equals the official counter's, op class by op class", {
    skip: noManifest,
  }, () => {
    const meta = JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8")).meta;
    const byOp = meta.flops.glide_small_forward_b4.by_op as Record<string, number>;
    const unet = new UNet(new Init(0), glideConfigFromOfficial(meta.small_glide));
    try {
      const f = unetFlops(unet, 4);
      assert.equal(f.conv, byOp["aten::conv2d"], "3x3/1x1 convolutions = aten::conv2d");
      assert.equal(f.attnProj, byOp["conv1d(hooks)"], "attention projections = conv1d");
      assert.equal(f.attnMatmul, byOp["aten::bmm"], "attention products = aten::bmm");
      assert.equal(f.linear, byOp["aten::addmm"], "linear layers = aten::addmm");
    } finally {
      unet.dispose();
    }
  });

  test("forward and sampling rows on every runtime, finite and positive, leaving no tensor", async () => {
    const { specs } = await runtimeSpecs();
    const init = new Init(5);
    const unet = new UNet(init, tiny);
    const x = init.normal([2, 8, 8, 3], 1) as Tensor4D;
    const t = tf.tensor1d([3, 700]) as Tensor1D;
    const tokens = tf.tensor2d([1, 2, 19, 19, 3, 19, 19, 19], [2, 4], "int32") as Tensor2D;
    const mask = tf.tensor2d([1, 1, 0, 0, 1, 0, 0, 0], [2, 4]) as Tensor2D;
    const before = tf.memory().numTensors;
    try {
      const { rows } = benchForward(
        { name: "tiny", unet, batch: 2, x, t, cond: { tokens, mask }, detail: "test" },
        specs,
        0,
      );
      const sampling = benchSampling(
        {
          name: "tiny",
          unet,
          models: {
            encode: (ps) => ({
              tokens: tf.tensor2d(
                ps.map(() => [1, 19, 19, 19]),
                [ps.length, 4],
                "int32",
              ) as Tensor2D,
              mask: tf.tensor2d(
                ps.map((p) => [p ? 1 : 0, 0, 0, 0]),
                [ps.length, 4],
              ) as Tensor2D,
            }),
          },
          strategies: [
            { label: "none", config: { kind: "none" } },
            { label: "cfg", config: { kind: "cfg", scale: 3 } },
          ],
          prompts: ["a", "b"],
          steps: () => 2,
          respacing: (n) =>
            createDiffusion({
              schedule: "linear",
              steps: 1000,
              respacing: String(n),
              modelVarType: "learned_range",
            }),
        },
        specs,
      );
      assert.equal(rows.length, specs.length, "one forward row per runtime");
      assert.equal(sampling.length, 2 * specs.length, "one sampling row per strategy and runtime");
      for (const r of [...rows, ...sampling])
        assert.ok(
          Number.isFinite(r.value) && r.value > 0 && r.ms > 0,
          `${r.name} on ${r.backend}: ${r.value} ${r.unit}`,
        );
      assert.ok(
        rows.every((r) => r.unit === "GFLOP/s"),
        "forward rows are in GFLOP/s",
      );
      assert.equal(tf.memory().numTensors, before, "the benchmarks leave no tensor behind");
    } finally {
      tf.dispose([x, t, tokens, mask]);
      unet.dispose();
    }
  });

  test("--compare-torch names each missing piece and refuses a checkout inside the project", () => {
    const missing = torchMissing({ checkout: "/nonexistent/glide", python: "/nonexistent/python3" });
    assert.equal(missing.length, 2, `python and checkout both missing: ${missing.join(" | ")}`);
    assert.match(missing[0]!, /\/nonexistent\/python3: not found/, "the interpreter is named");
    assert.match(missing[1]!, /not a glide-text2im checkout/, "the checkout is named");
    const inside = torchMissing({ checkout: REPO_ROOT, python: "/nonexistent/python3" });
    assert.ok(
      inside.some((m) => /inside this project/.test(m)),
      "a checkout inside the project is refused",
    );
  });

  test("--quickstart times a sweep from a fresh folder on each runtime", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gl-bench-qs-"));
    const saved = process.env.GUIDANCE_LAB_MODELS;
    try {
      await makeTinyZoo(dir);
      process.env.GUIDANCE_LAB_MODELS = join(dir, "models");
      const config = join(dir, "sweep.yaml");
      writeFileSync(
        config,
        `prompts: ["a red circle"]\nstrategies: [{ kind: cfg, scales: [1, 3] }]\nsteps: [2]\nsamplesPerPrompt: 2\nmetrics: [cost]\nout: ${join(dir, "unused")}\n`,
      );
      const { specs } = await runtimeSpecs();
      const runtimes = [...new Set(specs.map((s) => s.runtime))];
      const rows = await benchQuickstart({ config, runtimes, progress: false });
      assert.deepEqual(
        rows.map((r) => r.backend),
        runtimes,
        "one row per runtime, in order",
      );
      for (const r of rows) {
        assert.ok(r.ms > 0 && r.value > 0, `${r.backend}: ${r.ms} ms, ${r.value} ${r.unit}`);
        assert.match(r.detail, /^2 cells of /, `${r.backend}: both cells ran (nothing resumed)`);
      }
      assert.ok(!existsSync(join(dir, "unused")), "the config's out folder is not touched");
      const line = quickstartSummary(rows);
      assert.match(line, /^quickstart sweep: /, `summary: ${line}`);
      if (rows.length === 2) assert.match(line, /x faster on onnx\)/, `ratio in the summary: ${line}`);
    } finally {
      if (saved === undefined) delete process.env.GUIDANCE_LAB_MODELS;
      else process.env.GUIDANCE_LAB_MODELS = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test("the quickstart-sized cells' config is a valid sweep config with the quickstart's metrics", () => {
  // `npm run bench` runs it only in its full form (not --quick), so a stale key would otherwise surface late.
  const cells = parseSweepConfig(parse(CELLS_CONFIG), "bench cells");
  const quickstart = loadSweepConfig(QUICKSTART_CONFIG);
  assert.deepEqual([...cells.config.metrics].sort(), [...quickstart.config.metrics].sort());
});
