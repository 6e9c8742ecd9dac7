// `models evaluate`: the figures are computed from the models (a scorer with a known answer pins the accuracy
// arithmetic), every zoo task evaluates without leaking tensors, and the card states exactly what eval.json holds.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { initEngine, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../src/core/engine.ts";
import { NUM_CLASSES } from "../src/data/world.ts";
import { writeCard } from "../src/zoo/card.ts";
import { evaluateModel, labelledRenders, noisedAccuracy } from "../src/zoo/evaluate/index.ts";
import { makeTinyZoo } from "./helpers/tiny-zoo.ts";

let dir: string;
let models: string;
before(async () => {
  await initEngine("wasm", { quiet: true });
  dir = mkdtempSync(join(tmpdir(), "gl-evaluate-"));
  models = await makeTinyZoo(dir, ["denoiser", "classifier", "noised-clip", "eval-clip"]);
});
after(() => rmSync(dir, { recursive: true, force: true }));

const schedule = { schedule: "squaredcos_cap_v2", steps: 1000 };

test("noisedAccuracy: a scorer that always answers class c scores the frequency of c", () => {
  const data = labelledRenders(60, 16, "exclude", "test");
  const c = data.labels[0]!;
  const always = (x: Tensor4D) =>
    tf.cast(tf.oneHot(tf.fill([x.shape[0]], c, "int32") as Tensor1D, NUM_CLASSES), "float32") as Tensor2D;
  const acc = noisedAccuracy(always, data, 16, () => 500, schedule, 16, "s");
  const expected = data.labels.filter((l) => l === c).length / data.labels.length;
  assert.equal(acc, expected, "accuracy must be the share of renders whose label is c");
});

test("noisedAccuracy: a nearest-render scorer gets 100% at t = 0 and falls towards chance at t = 999", () => {
  const data = labelledRenders(40, 16, "exclude", "test");
  const px = 16 * 16 * 3;
  // Nearest clean render in pixel space: exact when the noise is negligible, lost once it dominates.
  const nearest = (x: Tensor4D) => {
    const flat = x.dataSync() as Float32Array;
    const labels = Array.from({ length: x.shape[0] }, (_, i) => {
      let best = 0;
      let bestD = Number.POSITIVE_INFINITY;
      data.images.forEach((img, j) => {
        let d = 0;
        for (let k = 0; k < px; k++) d += (flat[i * px + k]! - (img[k]! * 2 - 1)) ** 2;
        if (d < bestD) [best, bestD] = [j, d];
      });
      return data.labels[best]!;
    });
    return tf.cast(tf.oneHot(tf.tensor1d(labels, "int32"), NUM_CLASSES), "float32") as Tensor2D;
  };
  assert.equal(
    noisedAccuracy(nearest, data, 16, () => 0, schedule, 16, "s"),
    1,
    "t = 0 must be exact",
  );
  const late = noisedAccuracy(nearest, data, 16, () => 999, schedule, 16, "s");
  assert.ok(late < 0.5, `at t = 999 the nearest render is a guess, got ${late}`);
});

test("models evaluate: every zoo task gives figures in range, leaks no tensors, and the card states them", async () => {
  const before = tf.memory().numTensors;
  for (const name of ["classifier", "noised-clip", "eval-clip"]) {
    const ev = await evaluateModel(name, { dir: models, renders: 20, curveRenders: 8, log: () => {} });
    assert.ok(ev.figures.length >= 2, `${name}: figures expected`);
    for (const f of ev.figures)
      assert.ok(f.value >= 0 && f.value <= 1, `${name}: ${f.key}=${f.value} not in [0,1]`);
    if (name !== "eval-clip") assert.equal(ev.curve?.t.length, ev.curve?.accuracy.length, `${name}: curve`);
    const card = readFileSync(writeCard(name, models, ev), "utf8");
    for (const f of ev.figures)
      assert.ok(card.includes(`| ${f.key} | ${(100 * f.value).toFixed(1)}%`), `${name}: card lacks ${f.key}`);
    assert.ok(card.includes("experiments/zoo/"), `${name}: card must name its recipe`);
  }
  // The denoiser itself stands in as its own early checkpoint: same weights, x_T and step noise give the same
  // figures, which pins that both models are sampled identically.
  const ev = await evaluateModel("denoiser", {
    dir: models,
    samplesPerPrompt: 1,
    fdSamples: 4,
    steps: 2,
    early: "denoiser",
    log: () => {},
  });
  const keys = ev.figures.map((f) => f.key);
  for (const k of [
    "cfg3_single_object",
    "cfg1_single_object",
    "cfg3_colour",
    "fd_unconditional",
    "early_cfg3_single_object",
    "early_fd_unconditional",
    "cfg3_gain_over_cfg1_single_object",
    "cfg3_gain_over_early_colour",
    "cfg3_gain_over_cfg1_all",
  ]) {
    assert.ok(keys.includes(k), `denoiser figures lack ${k}: ${keys}`);
  }
  const value = (k: string) => ev.figures.find((f) => f.key === k)!.value;
  assert.equal(value("early_fd_unconditional"), value("fd_unconditional"), "same weights, same FD");
  assert.equal(value("early_cfg3_single_object"), value("cfg3_single_object"), "same weights, same accuracy");
  assert.equal(value("cfg3_gain_over_early_single_object"), 0, "same weights: no sample differs");
  assert.ok(
    ev.figures.find((f) => f.key === "cfg3_gain_over_early_colour")!.description.includes("p = 1.0000"),
    "no discordant pair: p = 1",
  );
  const card = readFileSync(writeCard("denoiser", models, ev), "utf8");
  assert.ok(
    card.includes(`| early_fd_unconditional | ${value("fd_unconditional").toFixed(4)}`),
    "card FD row",
  );
  const fd = ev.figures.find((f) => f.key === "fd_unconditional")!;
  assert.ok(
    Number.isFinite(fd.value) && fd.value >= 0,
    `FD must be a finite non-negative number, got ${fd.value}`,
  );
  assert.equal(tf.memory().numTensors, before, "evaluate must free every tensor it makes");
});
