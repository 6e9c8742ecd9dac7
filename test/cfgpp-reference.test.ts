// CFG++ against the authors' own solvers (CFGpp-diffusion/CFGpp, run by tools/golden/cfgpp_golden.py): DDIM,
// Euler, ancestral Euler and DPM-Solver++(2M), teacher-forced on the reference's recorded model outputs. The model
// here replays the reference's (ε_u, ε_c) of each call and checks that it is called at the reference's x, so every
// step of the trajectory is compared, and the final sample too; the strategy and the samplers run unchanged.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { before, describe, test } from "node:test";
import { createDiffusion } from "../src/core/diffusion.ts";
import { initEngine, type Tensor1D, type Tensor4D, tf } from "../src/core/engine.ts";
import { sample } from "../src/core/samplers/loop.ts";
import { SigmaView } from "../src/core/samplers/sigma.ts";
import type { Denoiser } from "../src/core/types.ts";
import { buildStrategy, checkStrategySampler } from "../src/strategies/registry.ts";
import { type GuidanceModels, hooksOf, nfe } from "../src/strategies/strategy.ts";
import { relErr } from "./helpers/onnx.ts";

interface Call {
  x: number[];
  /** The reference's own dtype of x: its σ-space solvers cast the start to float16, so their first input is. */
  x_dtype: "float32" | "float16";
  eps_u: number[];
  eps_c: number[];
}
interface Case {
  sampler: string;
  solver: string;
  eta?: number;
  calls: Call[];
  trajectory: number[][];
  sigmas?: number[];
  /** σ-space cases: the x_T of the reference's start (it casts x_T·σ_0 to float16). */
  xT?: number[];
  alphas_cumprod?: number[];
}
interface Fixture {
  meta: { steps: number; lambda: number; shape_nhwc: [number, number, number, number]; reference: string };
  xT: number[];
  noise: number[][];
  cases: Case[];
}

const FX = JSON.parse(readFileSync("test/fixtures/cfgpp/reference.json", "utf8")) as Fixture;
const SHAPE = FX.meta.shape_nhwc;
/** float32 rounding over five steps of differently ordered arithmetic; measured worst is reported by the test. */
const TOL = 1e-5;
/** A float16 input of the reference against our float32 one: two float16 roundings (the cast, the division). */
const TOL_F16 = 2 ** -10;

/** How far the x a model call received is from the reference's, and whether the reference's was float16. */
interface InputRel {
  rel: number;
  f16: boolean;
}

const t4 = (v: number[]) => tf.tensor4d(v, SHAPE);

/**
 * The model bag: `encode` marks the prompt rows (y = 1) and the unconditional ones (y = 0); `model` replays call n of
 * the case, checking its rows (conditional then unconditional) and the x it is called at.
 */
function replayModels(c: Case, inputRel: InputRel[]): GuidanceModels {
  let n = 0;
  return {
    encode: (prompts) => ({
      y: tf.tensor1d(
        prompts.map((p) => (p === "" ? 0 : 1)),
        "int32",
      ) as Tensor1D,
    }),
    model: (x, _t, cond) => {
      const call = c.calls[n++];
      if (!call) throw new Error(`${c.solver}: more model calls than the reference's ${c.calls.length}`);
      assert.deepEqual(Array.from(cond.y!.dataSync()), [1, 0], "rows: [conditional; unconditional]");
      const rows = x.dataSync();
      const size = rows.length / 2;
      const f16 = call.x_dtype === "float16";
      inputRel.push(
        { rel: relErr(rows.subarray(0, size), call.x), f16 },
        { rel: relErr(rows.subarray(size), call.x), f16 },
      );
      return { out: tf.concat([t4(call.eps_c), t4(call.eps_u)]) as Tensor4D, kind: "eps" };
    },
  };
}

function runCase(c: Case, tamper?: (d: Denoiser) => Denoiser) {
  const diffusion = createDiffusion({
    schedule: "linear",
    steps: 1000,
    respacing: c.sampler === "ddim" ? `ddim${FX.meta.steps}` : "",
  });
  const inputRel: InputRel[] = [];
  const config = { kind: "cfg++", scale: FX.meta.lambda };
  checkStrategySampler(config, c.sampler, c.eta, "sampler");
  const g = buildStrategy(config, replayModels(c, inputRel)).bind(["p"]);
  const xT = t4(c.xT ?? FX.xT);
  try {
    const r = sample(diffusion, tamper ? tamper(g.denoise) : g.denoise, xT, {
      ...hooksOf(g),
      sampler: c.sampler,
      steps: FX.meta.steps,
      schedule: c.sampler === "ddim" ? "default" : "karras",
      ...(c.eta !== undefined ? { eta: c.eta } : {}),
      noise: (k) => t4(FX.noise[k]!),
      calls: (s) => nfe(g.calls(s)),
    });
    const got = r.sample.dataSync();
    r.sample.dispose();
    return { diffusion, inputRel, final: relErr(got, c.trajectory.at(-1)!), nfe: r.nfe };
  } finally {
    xT.dispose();
    g.dispose();
  }
}

before(async () => {
  await initEngine("cpu", { quiet: true });
});

describe(`cfg++ against ${FX.meta.reference}`, () => {
  for (const c of FX.cases) {
    test(`${c.sampler} (${c.solver}, λ = ${FX.meta.lambda}): every step and the sample within ${TOL}`, () => {
      const before = tf.memory().numTensors;
      const { diffusion, inputRel, final, nfe } = runCase(c);
      assert.equal(tf.memory().numTensors, before, "no tensor leaks");
      // the same tables and σs as the reference ran on
      if (c.alphas_cumprod) assert.ok(relErr(diffusion.alphasCumprod, c.alphas_cumprod) < 1e-12);
      if (c.sigmas) {
        const ours = new SigmaView(diffusion).schedule(FX.meta.steps, "karras");
        assert.ok(relErr(ours, c.sigmas) < 1e-12, `σs ${ours} vs ${c.sigmas}`);
      }
      assert.equal(inputRel.length, 2 * c.calls.length, "one batched [cond; uncond] call per reference call");
      assert.equal(nfe, 2 * c.calls.length, "two network evaluations per step, as declared");
      const f32 = Math.max(final, ...inputRel.filter((r) => !r.f16).map((r) => r.rel));
      const f16 = Math.max(0, ...inputRel.filter((r) => r.f16).map((r) => r.rel));
      if (!process.env.GUIDANCE_LAB_QUIET)
        console.log(
          `${c.sampler}: worst rel ${f32.toExponential(2)} (final ${final.toExponential(2)}); float16 inputs ${f16.toExponential(2)}`,
        );
      assert.ok(f32 <= TOL, `${c.sampler}: rel ${f32} > ${TOL}`);
      assert.ok(f16 <= TOL_F16, `${c.sampler}: float16 input rel ${f16} > ${TOL_F16}`);
    });
  }

  test("the check fails when the sampler renoises with the guided prediction (plain cfg)", () => {
    // Dropping the renoising prediction turns each update into the sampler's plain step on eps_λ.
    const drop =
      (d: Denoiser): Denoiser =>
      (x, s) => {
        const { renoise, ...p } = d(x, s);
        renoise?.dispose();
        return p;
      };
    for (const c of FX.cases) {
      const before = tf.memory().numTensors;
      // the replay model asserts nothing about x, so the run completes and the divergence shows in the numbers
      const { inputRel, final } = runCase(c, drop);
      assert.equal(tf.memory().numTensors, before, "no tensor leaks");
      assert.ok(
        Math.max(final, ...inputRel.map((r) => r.rel)) > 1e-3,
        `${c.sampler}: plain step indistinguishable from CFG++`,
      );
    }
  });

  test("a sampler without a renoising form refuses cfg++'s prediction, naming itself, and leaks nothing", () => {
    const c = FX.cases.find((k) => k.sampler === "euler")!;
    const diffusion = createDiffusion({ schedule: "linear", steps: 1000 });
    assert.throws(() => checkStrategySampler({ kind: "cfg++" }, "heun", undefined, "sampler"), /not heun/);
    for (const sampler of ["heun", "dpmpp_2m_sde", "ddpm"]) {
      const g = buildStrategy({ kind: "cfg++", scale: 0.5 }, replayModels(c, [])).bind(["p"]);
      const xT = t4(FX.xT);
      const before = tf.memory().numTensors;
      assert.throws(
        () =>
          sample(
            sampler === "ddpm"
              ? createDiffusion({ schedule: "linear", steps: 1000, respacing: "5" })
              : diffusion,
            g.denoise,
            xT,
            {
              ...hooksOf(g),
              sampler,
              steps: 3,
            },
          ),
        new RegExp(`sampler '${sampler}' does not take a renoising prediction`),
      );
      assert.equal(tf.memory().numTensors, before, `${sampler}: no tensor leaks`);
      xT.dispose();
      g.dispose();
    }
  });
});
