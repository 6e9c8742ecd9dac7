import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { createDiffusion, type GaussianDiffusion } from "../src/core/diffusion.ts";
import { backendFromEnv, initEngine, type Tensor4D, tf } from "../src/core/engine.ts";
import {
  ddimStep,
  ddpmStep,
  type RecordedStep,
  sample,
  sampleDdim,
  sampleDdpm,
  sampleInterruptible,
  seededNoise,
} from "../src/core/samplers.ts";
import type { Denoiser, StepInfo } from "../src/core/types.ts";

// A message avoids node:assert's source-reading message generation, which is pathologically slow under tsx.
const ok = (cond: boolean, msg = "check failed") => assert.ok(cond, msg);

before(async () => {
  await initEngine(backendFromEnv(), { quiet: true });
});

const SHAPE: [number, number, number, number] = [2, 4, 4, 3];
const TARGET = 0.3;

/** Data = the single point x* = 0.3 everywhere, whose exact noise prediction is (x_t − sqrt(ᾱ)·x*)/sqrt(1−ᾱ). */
function pointDenoiser(d: GaussianDiffusion): Denoiser {
  return (x, step) => {
    const i = step.index;
    const out = tf.div(
      tf.sub(x, d.sqrtAlphasCumprod[i]! * TARGET),
      d.sqrtOneMinusAlphasCumprod[i]!,
    ) as Tensor4D;
    return { out, kind: "eps" };
  };
}

const maxDiff = (x: Tensor4D, v: number) => tf.tidy(() => tf.max(tf.abs(tf.sub(x, v))).dataSync()[0]!);

describe("samplers", () => {
  const d = createDiffusion({ schedule: "cosine", steps: 1000, respacing: "25" });

  test("DDPM converges to the single data point", () => {
    const xT = seededNoise(11)(0, SHAPE);
    const x0 = sampleDdpm(d, pointDenoiser(d), xT, { noise: seededNoise(5) });
    ok(maxDiff(x0, TARGET) < 1e-3, `DDPM ended ${maxDiff(x0, TARGET)} away`);
    tf.dispose([xT, x0]);
  });

  test("DDIM (eta 0 and 1) converges to the single data point", () => {
    const xT = seededNoise(12)(0, SHAPE);
    for (const eta of [0, 1]) {
      const x0 = sampleDdim(d, pointDenoiser(d), xT, { eta, noise: seededNoise(6) });
      ok(maxDiff(x0, TARGET) < 1e-3, `DDIM eta ${eta} ended ${maxDiff(x0, TARGET)} away`);
      x0.dispose();
    }
    xT.dispose();
  });

  test("deterministic for the same noise source, different for another seed", () => {
    const fixed = createDiffusion({ schedule: "linear", steps: 1000, respacing: "10" });
    // A denoiser that is wrong on purpose keeps the noise visible in the result.
    const denoise: Denoiser = (x) => ({ out: tf.mul(x, 0.5) as Tensor4D, kind: "eps" });
    const xT = seededNoise(1)(0, SHAPE);
    const run = (seed: number) => {
      const out = sampleDdpm(fixed, denoise, xT, { noise: seededNoise(seed), clipDenoised: false });
      const data = out.dataSync();
      out.dispose();
      return data;
    };
    assert.deepEqual(run(3), run(3));
    assert.notDeepEqual(run(3), run(4));
    const a = seededNoise("x")(2, [1, 2, 2, 1]).dataSync();
    assert.deepEqual(a, seededNoise("x")(2, [1, 2, 2, 1]).dataSync());
    xT.dispose();
  });

  test("sampleInterruptible: the same samples as sample; a throw between steps stops there, freeing the loop's tensors", async () => {
    const xT = seededNoise(3)(0, SHAPE);
    // ddpm (no state), dpmpp_2m (state carried across steps: freed too).
    for (const sampler of ["ddpm", "dpmpp_2m"]) {
      const table = sampler === "ddpm" ? d : createDiffusion({ schedule: "cosine", steps: 1000 });
      const opts = { sampler, steps: 10, noise: seededNoise(4) };
      const whole = sample(table, pointDenoiser(table), xT, opts);
      const between = await sampleInterruptible(table, pointDenoiser(table), xT, opts, async () => {});
      assert.deepEqual(between.sample.dataSync(), whole.sample.dataSync(), `${sampler}: same pixels`);
      assert.equal(between.nfe, whole.nfe, `${sampler}: same NFE`);
      tf.dispose([whole.sample, between.sample]);

      const start = tf.memory().numTensors;
      let calls = 0;
      const counted: Denoiser = (x, step) => {
        calls++;
        return pointDenoiser(table)(x, step);
      };
      let steps = 0;
      await assert.rejects(
        sampleInterruptible(table, counted, xT, opts, async () => {
          if (++steps === 3) throw new Error("stop");
        }),
        /stop/,
      );
      assert.equal(calls, 3, `${sampler}: stopped after the third step's model call`);
      assert.equal(tf.memory().numTensors, start, `${sampler}: no tensor left behind`);
    }
    ok(!xT.isDisposed, "xT is the caller's");
    xT.dispose();
  });

  test("no tensor leaks per step; the caller keeps xT", () => {
    const xT = seededNoise(2)(0, SHAPE);
    const counts: number[] = [];
    const onStep = () => counts.push(tf.memory().numTensors);
    const condFn = (x: Tensor4D) => tf.mul(x, -0.01) as Tensor4D;
    const start = tf.memory().numTensors;
    const x1 = sampleDdpm(d, pointDenoiser(d), xT, { noise: seededNoise(1), onStep, condFn });
    assert.equal(tf.memory().numTensors, start + 1, "only the result survives a DDPM loop");
    const c1 = [...counts];
    counts.length = 0;
    const x2 = sampleDdim(d, pointDenoiser(d), xT, { eta: 0.5, noise: seededNoise(1), onStep, condFn });
    assert.equal(tf.memory().numTensors, start + 2, "only the result survives a DDIM loop");
    assert.equal(c1[0], start + 1);
    for (const c of [c1, counts]) {
      assert.equal(c.length, d.numTimesteps);
      // Exactly one current x (beside xT and earlier results) is alive at every step.
      ok(
        c.every((n) => n === c[0]),
        `tensor count per step ${c.join(",")}`,
      );
    }
    ok(!xT.isDisposed, "xT disposed by the sampler");
    tf.dispose([xT, x1, x2]);
  });

  test("step order, original timesteps and no noise at index 0", () => {
    const steps: StepInfo[] = [];
    const noiseKs: number[] = [];
    const noise = (k: number, shape: number[]) => {
      noiseKs.push(k);
      return seededNoise(0)(k, shape);
    };
    const denoise: Denoiser = (x, step) => {
      steps.push(step);
      return pointDenoiser(d)(x, step);
    };
    const xT = seededNoise(3)(0, SHAPE);
    const rec: RecordedStep[] = [];
    const out = sampleDdpm(d, denoise, xT, { noise, recordSteps: rec });
    assert.deepEqual(
      steps.map((s) => s.index),
      Array.from({ length: 25 }, (_, k) => 24 - k),
    );
    assert.deepEqual(
      steps.map((s) => s.t),
      [...d.timestepMap].reverse(),
    );
    assert.deepEqual(
      steps.map((s) => s.k),
      Array.from({ length: 25 }, (_, k) => k),
    );
    assert.deepEqual(
      noiseKs,
      Array.from({ length: 24 }, (_, k) => k),
    );
    assert.equal(rec.length, 25);
    assert.deepEqual(rec[24]!.sample, rec[24]!.mean);
    tf.dispose([xT, out]);
  });

  test("condFn shifts the DDPM mean and the DDIM score", () => {
    const xT = seededNoise(4)(0, SHAPE);
    const grad = () => tf.fill(SHAPE, 1) as Tensor4D;
    const denoise = pointDenoiser(d);
    const i = 10;
    const plain = ddpmStep(d, denoise, xT, i, { noise: seededNoise(0) });
    const guided = ddpmStep(d, denoise, xT, i, { noise: seededNoise(0), condFn: grad });
    const shift = tf.tidy(() => tf.mean(tf.sub(guided.sample, plain.sample)).dataSync()[0]!);
    ok(Math.abs(shift - Math.fround(d.posteriorVariance[i]!)) < 1e-5, `DDPM shift ${shift}`);
    const p2 = ddimStep(d, denoise, xT, i, {});
    const g2 = ddimStep(d, denoise, xT, i, { condFn: grad });
    const shift2 = tf.tidy(() => tf.mean(tf.sub(g2.sample, p2.sample)).dataSync()[0]!);
    ok(shift2 > 0, `DDIM shift ${shift2}`);
    tf.dispose([
      xT,
      plain.sample,
      plain.predXstart,
      guided.sample,
      guided.predXstart,
      p2.sample,
      p2.predXstart,
      g2.sample,
      g2.predXstart,
    ]);
  });
});
