// Guides chosen per strategy entry (`model: NAME`): config validation (never the evaluation CLIP), checks before
// sampling (unknown model, wrong kind, the evaluation CLIP's weights under another name), distinct cell ids, the
// zoo's loader, and `sample --guide-model` end to end on a tiny zoo.
import assert from "node:assert/strict";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runSample } from "../src/cli/sample.ts";
import { initEngine, tf } from "../src/core/engine.ts";
import { readPng } from "../src/data/png.ts";
import { metricModelsOn } from "../src/onnx/metric-models.ts";
import { onnxUnavailable } from "../src/onnx/runtime.ts";
import { parseSweepConfig } from "../src/sweep/config.ts";
import { checkGuides, guideModelNames, guideScores, guidesUsed, namedGuides } from "../src/sweep/guides.ts";
import { planCells } from "../src/sweep/plan.ts";
import { runSweep } from "../src/sweep/runner.ts";
import { loadZoo } from "../src/zoo/zoo.ts";
import { makeTinyZoo } from "./helpers/tiny-zoo.ts";

const dir = mkdtempSync(join(tmpdir(), "gl-guides-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const parse = (raw: Record<string, unknown>) =>
  parseSweepConfig({ prompts: "a red circle", ...raw }, "cfg.yaml");

describe("config validation", () => {
  it("refuses the evaluation CLIP as a guide, naming the key", () => {
    assert.throws(
      () => parse({ strategies: [{ kind: "none" }, { kind: "clean-clip", model: "eval-clip" }] }),
      /cfg\.yaml: strategies\.1\.model: 'eval-clip' is the evaluation CLIP \(models\.evalClip\)/,
    );
    assert.throws(
      () => parse({ strategies: [{ kind: "clean-clip", model: ["clean-clip", "eval-clip"], scales: [1] }] }),
      /strategies\.0\.model\.1: 'eval-clip' is the evaluation CLIP/,
    );
    assert.throws(
      () =>
        parse({
          strategies: [
            { kind: "cfg", scale: 2 },
            { kind: "clip", base: { kind: "clean-clip", model: "e2" } },
          ],
          models: { evalClip: "e2" },
        }),
      /strategies\.1\.base\.model: 'e2' is the evaluation CLIP/,
    );
    // clean-clip's default guide (the zoo's clean-clip) named as the evaluation CLIP.
    assert.throws(
      () => parse({ strategies: [{ kind: "clean-clip" }], models: { evalClip: "clean-clip" } }),
      /models\.evalClip: 'clean-clip' is clean-clip's default guide/,
    );
    assert.doesNotThrow(() =>
      parse({ strategies: [{ kind: "clip", model: "noised-clip-500", scales: [1, 3] }] }),
    );
  });

  it("cells with different guides get different ids and record the guide", () => {
    const { config } = parse({
      strategies: [
        { kind: "clip", model: "noised-clip-250", scales: [3] },
        { kind: "clip", model: "noised-clip-500", scales: [3] },
        { kind: "clip", scales: [3] },
      ],
    });
    const cells = planCells(config);
    assert.equal(new Set(cells.map((c) => c.id)).size, 3, cells.map((c) => c.id).join(", "));
    assert.deepEqual(
      cells.map((c) => c.params.model),
      ["noised-clip-250", "noised-clip-500", undefined],
    );
    assert.deepEqual(guideModelNames(config.strategies), ["noised-clip-250", "noised-clip-500"]);
    assert.deepEqual(
      namedGuides([{ kind: "clip", model: ["a", "b"], base: { kind: "classifier", model: "c" } }]).map(
        (g) => g.key,
      ),
      ["strategies.0.model.0", "strategies.0.model.1", "strategies.0.base.model"],
    );
  });
});

describe("checks before sampling", () => {
  const zoo = join(dir, "fake-models");
  const fake = (name: string, task: string, bytes: string) => {
    mkdirSync(join(zoo, name), { recursive: true });
    const exported = {
      name,
      task,
      step: 1,
      wallSeconds: 1,
      model: {},
      diffusion: { schedule: "squaredcos_cap_v2", steps: 1000 },
      world: { size: 16, twoObjects: 0.3 },
    };
    writeFileSync(join(zoo, name, "model.json"), JSON.stringify(exported));
    writeFileSync(join(zoo, name, "model.safetensors"), bytes);
  };
  before(() => {
    fake("eval-clip", "eval-clip", "evaluation weights");
    fake("copy-of-eval", "eval-clip", "evaluation weights");
    fake("clean-clip", "eval-clip", "other weights");
    fake("noised-clip-500", "noised-clip", "noised weights");
    fake("classifier-250", "classifier", "classifier weights");
    fake("denoiser", "denoiser", "denoiser weights");
  });
  const check = (strategies: unknown[]) => checkGuides(strategies, "eval-clip", zoo, "cfg.yaml");

  it("accepts guides of the right kind", () => {
    assert.doesNotThrow(() =>
      check([
        { kind: "clip", model: "noised-clip-500" },
        { kind: "classifier", model: "classifier-250" },
        { kind: "clean-clip", model: "clean-clip" },
        { kind: "clean-clip" },
      ]),
    );
  });

  it("names the key of an unknown model, a model of the wrong kind, or a copy of the evaluation CLIP", () => {
    assert.throws(
      () => check([{ kind: "clip", model: "noised-clip-9" }]),
      /cfg\.yaml: strategies\.0\.model: model 'noised-clip-9': no /,
    );
    assert.throws(
      () => check([{ kind: "none" }, { kind: "clip", model: "classifier-250" }]),
      /strategies\.1\.model: 'classifier-250' is a classifier, which strategy 'clip' cannot guide with/,
    );
    assert.throws(
      () => check([{ kind: "clip", model: "denoiser" }]),
      /'denoiser' is a denoiser, not a guide/,
    );
    assert.throws(
      () => check([{ kind: "clean-clip", model: "copy-of-eval" }]),
      /strategies\.0\.model: 'copy-of-eval' has the evaluation CLIP's weights \(eval-clip\)/,
    );
    // The default guide with the evaluation CLIP's weights.
    const copy = join(dir, "fake-models-2");
    cpSync(zoo, copy, { recursive: true });
    cpSync(join(zoo, "eval-clip", "model.safetensors"), join(copy, "clean-clip", "model.safetensors"));
    assert.throws(
      () => checkGuides([{ kind: "clean-clip" }], "eval-clip", copy, "cfg.yaml"),
      /clean-clip's default guide 'clean-clip' has the evaluation CLIP's weights/,
    );
  });
});

describe("the zoo's guides and sample --guide-model", () => {
  let models: string;
  before(async () => {
    await initEngine("wasm", { quiet: true });
    mkdirSync(join(dir, "tiny"));
    models = await makeTinyZoo(join(dir, "tiny"), ["denoiser", "noised-clip", "eval-clip"]);
    cpSync(join(models, "noised-clip"), join(models, "noised-clip-b"), { recursive: true });
    // A clean guide trained apart from the evaluation CLIP (here: the same tiny recipe, its weights perturbed).
    cpSync(join(models, "eval-clip"), join(models, "clean-clip"), { recursive: true });
    const w = join(models, "clean-clip", "model.safetensors");
    const bytes = readFileSync(w);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 1;
    writeFileSync(w, bytes);
  });

  it("loads a guide by name, once, and refuses a denoiser", () => {
    const zoo = loadZoo({}, models);
    try {
      const g = zoo.models.guide!("noised-clip-b");
      assert.ok(g.clip && g.clipText, "a noised CLIP provides clip and clipText");
      assert.equal(zoo.models.guide!("noised-clip-b"), g, "loaded once");
      const c = zoo.models.guide!("eval-clip");
      assert.ok(c.cleanClip && c.cleanClipText, "an eval-clip-task model provides a clean CLIP");
      assert.ok(zoo.models.cleanClip, "the zoo's clean-clip is the default clean guide");
      assert.throws(() => zoo.models.guide!("denoiser"), /'denoiser' is a denoiser, not a guide/);
    } finally {
      zoo.dispose();
    }
  });

  it("samples with --guide-model, and refuses the evaluation CLIP or a taken model", {
    timeout: 120_000,
  }, async () => {
    process.env.GUIDANCE_LAB_MODELS = models;
    const before = tf.memory().numTensors;
    const args = {
      model: "denoiser",
      prompt: "a red circle",
      strategy: "clip",
      scale: 1,
      steps: 2,
      sampler: "ddpm" as const,
      eta: 0,
      n: 1,
      seed: 1,
      out: join(dir, "s1"),
      guideModel: "noised-clip-b",
      runtime: "tfjs" as const,
    };
    await runSample(args);
    await runSample({
      ...args,
      strategy: "clean-clip",
      scale: 10,
      guideModel: undefined,
      out: join(dir, "s2"),
    });
    assert.equal(tf.memory().numTensors, before, "no tensor leak");
    assert.ok(readdirSync(join(dir, "s1")).includes("grid.png"));
    await assert.rejects(
      runSample({ ...args, strategy: "clean-clip", guideModel: "eval-clip" }),
      /--guide-model: strategies\.0\.model: 'eval-clip' is the evaluation CLIP/,
    );
    await assert.rejects(
      runSample({ ...args, guideModel: "nope" }),
      /--guide-model: strategies\.0\.model: model 'nope': no /,
    );
    await assert.rejects(runSample({ ...args, guideModel: "eval-clip" }), /evaluation CLIP/);
  });

  it("clean-clip with backprop on ONNX Runtime differentiates the denoiser's TensorFlow.js twin", {
    timeout: 120_000,
  }, async (t) => {
    const why = await onnxUnavailable();
    if (why) return t.skip(`onnxruntime-node does not load: ${why}`);
    process.env.GUIDANCE_LAB_MODELS = models;
    const args = {
      model: "denoiser",
      prompt: "a blue square",
      strategy: "clean-clip",
      scale: 30,
      steps: 2,
      sampler: "ddpm" as const,
      eta: 0,
      n: 1,
      seed: 4,
    };
    await runSample({ ...args, out: join(dir, "cc-tfjs"), runtime: "tfjs" });
    await runSample({ ...args, out: join(dir, "cc-onnx"), runtime: "onnx" });
    // With backprop the whole base runs on models.gradModel (TensorFlow.js), so the two are the same computation.
    assert.deepEqual(
      readPng(join(dir, "cc-onnx", "grid.png")).data,
      readPng(join(dir, "cc-tfjs", "grid.png")).data,
    );
  });

  it("a sweep checks a named guide before sampling and records every guide's own score per sample", {
    timeout: 120_000,
  }, async () => {
    process.env.GUIDANCE_LAB_MODELS = models;
    const config = join(dir, "guided.yaml");
    const base = `prompts: ["a red circle"]\nsteps: 2\nsamplesPerPrompt: 2\nseed: 3\nmetrics: [prompt_accuracy]\nruntime: tfjs\n`;
    writeFileSync(config, `${base}strategies:\n  - { kind: clip, model: noised-clip-9, scales: [1] }\n`);
    const bad = join(dir, "run-bad");
    await assert.rejects(
      runSweep(config, { out: bad, quiet: true }),
      /guided\.yaml: strategies\.0\.model: model 'noised-clip-9': no /,
    );
    assert.ok(!existsSync(bad), "nothing written before the error");
    writeFileSync(
      config,
      `${base}strategies:\n  - { kind: none }\n  - { kind: clip, model: [noised-clip, noised-clip-b], scales: [1] }\n`,
    );
    const out = join(dir, "run-guided");
    const r = await runSweep(config, { out, quiet: true });
    assert.equal(r.finished.length, 3, "none + one cell per guide");
    const env = JSON.parse(readFileSync(join(out, "env.json"), "utf8"));
    assert.deepEqual(env.guideModels, ["noised-clip", "noised-clip-b"], "named guides in the provenance");
    // Guide scores are per-sample observations (observations.json), beside the oracle's verdicts.
    const records = r.finished.map((id) => ({
      cellId: id,
      ...(JSON.parse(readFileSync(join(out, "cells", id, "observations.json"), "utf8")) as object),
    })) as { cellId: string; guideScores: Record<string, number[]> }[];
    for (const id of r.finished) {
      const rec = JSON.parse(readFileSync(join(out, "cells", id, "record.json"), "utf8"));
      assert.equal(rec.guideScores, undefined, "not duplicated in record.json");
    }
    for (const rec of records) {
      assert.deepEqual(Object.keys(rec.guideScores).sort(), ["noised-clip", "noised-clip-b"], rec.cellId);
      for (const v of Object.values(rec.guideScores) as number[][]) {
        assert.equal(v.length, 2, "one score per sample");
        assert.ok(
          v.every((x) => Number.isFinite(x) && Math.abs(x) <= 100),
          `CLIP scores: ${v}`,
        );
      }
    }
    // The same weights under two names score alike; the recorded value is 100·cos with that guide's towers.
    assert.deepEqual(records[0]!.guideScores["noised-clip"], records[0]!.guideScores["noised-clip-b"]);
    const zoo = loadZoo({}, models);
    try {
      const img = new Float32Array(16 * 16 * 3).fill(0.5);
      const score = (runtime: "tfjs" | "onnx") => {
        const forwards = metricModelsOn(runtime);
        try {
          return guideScores(zoo, forwards, ["noised-clip"], [img], 16, ["a red circle"])["noised-clip"]![0]!;
        } finally {
          forwards.dispose();
        }
      };
      const s = score("tfjs");
      // On ONNX Runtime the same forward replays as the metrics' traced graph.
      if (!(await onnxUnavailable())) {
        const o = score("onnx");
        assert.ok(Math.abs(o - s) <= 1e-5 * Math.abs(s), `ONNX Runtime ${o} vs TensorFlow.js ${s}`);
      }
      const want = tf.tidy(() => {
        const clip = zoo.guideModel("noised-clip").module as unknown as {
          embedImage(x: unknown, t: unknown): ReturnType<typeof tf.zeros>;
        };
        const zi = clip.embedImage(tf.zeros([1, 16, 16, 3]), tf.zeros([1], "int32"));
        const zt = zoo.models.clipText!(["a red circle"]);
        return (
          (100 * tf.sum(tf.mul(zi, zt)).dataSync()[0]!) /
          tf.norm(zi).dataSync()[0]! /
          tf.norm(zt).dataSync()[0]!
        );
      });
      assert.ok(Math.abs(s! - want) < 1e-3, `score ${s} vs ${want}`);
      assert.deepEqual(
        guidesUsed([{ kind: "clip" }, { kind: "classifier", model: "c-250" }, { kind: "cfg" }], {
          classifier: "classifier",
          clip: "noised-clip",
          cleanClip: "clean-clip",
        }),
        ["c-250", "noised-clip"],
      );
    } finally {
      zoo.dispose();
    }
  });
});
