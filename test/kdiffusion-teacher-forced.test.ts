// The σ-space samplers' arithmetic against k-diffusion's (and diffusers' UniPC) on the reference's own recorded
// denoiser outputs: every case of the kdiffusion golden fixture, teacher-forced (src/verify/sections/kdiffusion.ts).
// No network runs, so it belongs in the suite; `verify-reference --section kdiffusion` adds the end-to-end runs.
import assert from "node:assert/strict";
import { before, test } from "node:test";
import { backendFromEnv, initEngine, tf } from "../src/core/engine.ts";
import { SAMPLER_NAMES } from "../src/core/samplers/registry.ts";
import {
  endToEndTol,
  fixtureContext,
  TOL_TEACHER_FORCED,
  teacherForcedRows,
} from "../src/verify/sections/kdiffusion.ts";

before(async () => {
  await initEngine(backendFromEnv(), { quiet: true });
});

test("teacher-forced: every sampler's arithmetic equals the reference's on its recorded D", () => {
  const fx = fixtureContext();
  const before = tf.memory().numTensors;
  const rows = teacherForcedRows(fx);
  assert.equal(tf.memory().numTensors, before, "the replay leaks no tensor");
  assert.equal(rows.length, 24);
  for (const r of rows) {
    assert.ok(r.pass, `${r.case}: rel ${r.rel} > ${TOL_TEACHER_FORCED} (${r.note})`);
    assert.equal(r.tol, TOL_TEACHER_FORCED);
    if (!process.env.GUIDANCE_LAB_QUIET) console.log(`${r.case}: ${r.rel.toExponential(2)} (${r.note})`);
  }
  // every σ-space sampler of the registry has a case, conditional and with cfg
  const cases = fx.meta<{ sampler: string; guidance: string }[]>("kdiffusion", "cases");
  const sigmaSamplers = SAMPLER_NAMES.filter((n) => n !== "ddpm" && n !== "ddim");
  for (const name of sigmaSamplers)
    for (const g of ["cond", "cfg"])
      assert.ok(
        cases.some((c) => c.sampler === name && c.guidance === g),
        `no ${g} case for ${name}`,
      );
});

test("teacher-forced: the model is called as k-diffusion calls it (float32 σ, its float32 log and c_in)", () => {
  // On the Karras and exponential σs (float64 on both sides, so the schedules agree before the call) our call's
  // timestep and network input equal the reference's bit for bit. With the call at the float64 σ they were 1.8e-8
  // (of T) and 1.4e-7 off (SigmaView.denoisedPair).
  const rows = teacherForcedRows(fixtureContext()).filter((r) => /karras|exponential/.test(r.case));
  assert.equal(rows.length, 8);
  for (const r of rows) {
    const part = (name: string) => Number(r.note?.match(new RegExp(`(?:^|, )${name} ([^,]+)`))?.[1]);
    assert.ok(part("t") <= 1e-12, `${r.case}: t ${part("t")} (${r.note})`);
    assert.equal(part("x_t"), 0, `${r.case}: x_t (${r.note})`);
  }
});

test("teacher-forced: a reference sample off by 1e-4 in one pixel fails the check", () => {
  // The check can fail: the same replay against a reference whose stored sample is perturbed.
  const fx = fixtureContext();
  const real = fx.load.bind(fx);
  const tampered = Object.create(fx) as typeof fx;
  tampered.load = (name: string) => {
    const arr = real(name);
    if (name !== "euler_default_cond.npy") return arr;
    const data = new Float32Array(arr.data as Float32Array);
    data[0] = data[0]! + 1e-4;
    return { ...arr, data };
  };
  const rows = teacherForcedRows(tampered).filter((r) => r.case.includes("euler default σs, conditional"));
  assert.equal(rows.length, 1);
  assert.equal(rows[0]!.pass, false);
  assert.match(rows[0]!.note ?? "", /^8 calls/, "a comparison, not an error row");
  assert.ok(rows[0]!.rel > 1e-5, `rel ${rows[0]!.rel}`);
});

test("end-to-end tolerance: max of 1e-4, the thread spread and the perturbed runs; CPU configurations only reported", () => {
  const spreads = {
    spread: { a: 2e-4 },
    perturb_spread: {
      a: [1, 2, 3].map((seed) => ({ delta: 2e-6, seed, spread: [1e-4, 2e-4, 3e-4][seed - 1]! })),
    },
    config_spread: { a: [{ config: "threads=2", spread: 2 }] },
  };
  const a = endToEndTol(spreads, "a");
  assert.equal(a.tol, 3e-4);
  assert.match(a.from ?? "", /3 seeds/);
  assert.equal(a.configs?.sorted.at(-1), 2, "the configuration runs are kept for the row's note");
  assert.equal(endToEndTol({ config_spread: { b: [{ config: "x", spread: 1 }] } }, "b").tol, 1e-4);
  assert.throws(
    () =>
      endToEndTol(
        { perturb_spread: { c: [1e-6, 2e-6].map((delta) => ({ delta, seed: 1, spread: 1 })) } },
        "c",
      ),
    /mixes δs/,
  );
});
