// Every registry sampler: convergence on data whose denoiser is exact, accuracy ordering on a Gaussian whose
// probability-flow ODE has a closed form, NFE per run, no tensor leaks with every hook on, the schedules against
// diffusers' and k-diffusion's published forms, the strategy/sampler pairing, and no sampler-name switch outside
// the registry.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { createDiffusion } from "../src/core/diffusion.ts";
import { backendFromEnv, initEngine, type Tensor4D, tf } from "../src/core/engine.ts";
import { karrasSigmas, spacedTimesteps } from "../src/core/samplers/schedules.ts";
import {
  SAMPLER_NAMES,
  SAMPLERS,
  type SampleOptions,
  SigmaView,
  sample,
  samplerDef,
  samplerTable,
  seededNoise,
} from "../src/core/samplers.ts";
import type { Denoiser } from "../src/core/types.ts";
import { checkStrategySampler } from "../src/strategies/registry.ts";
import { parseSweepConfig } from "../src/sweep/config.ts";
import { planCells } from "../src/sweep/plan.ts";

const ok = (cond: boolean, msg = "check failed") => assert.ok(cond, msg);

before(async () => {
  await initEngine(backendFromEnv(), { quiet: true });
});

const SHAPE: [number, number, number, number] = [2, 4, 4, 3];
const full = createDiffusion({ schedule: "cosine", steps: 1000 });
const view = new SigmaView(full);

/** The exact ε of data N(m, s²) per pixel at x_t (VP) and table index t (fractional on the full table). */
function gaussianDenoiser(m: number, s: number, on: SigmaView = view): Denoiser {
  return (x, step) => {
    const sigma = on.indexToSigma(step.t);
    const abar = 1 / (1 + sigma * sigma);
    return tf.tidy(() => {
      const xs = tf.div(x, Math.sqrt(abar));
      // D(x; σ) = m + s²/(s²+σ²)·(x_σ − m); ε = (x_σ − D)/σ
      const d = tf.add(m, tf.mul(tf.sub(xs, m), (s * s) / (s * s + sigma * sigma)));
      return { out: tf.div(tf.sub(xs, d), sigma) as Tensor4D, kind: "eps" as const };
    });
  };
}

/** The table a sampler steps on for `steps` steps of the full cosine schedule. */
function tableFor(name: string, steps: number) {
  const r = samplerDef(name).respacing(steps, "default", 1000);
  return createDiffusion({ schedule: "cosine", steps: 1000, respacing: r });
}

const maxAbs = (a: Tensor4D, b: Tensor4D) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);

describe("sampler registry", () => {
  test("the registry's names are the samplers the field uses, each once", () => {
    assert.deepEqual([...SAMPLER_NAMES].sort(), SAMPLERS.map((d) => d.name).sort());
    for (const n of ["ddpm", "ddim", "euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_2m_sde"])
      ok(SAMPLER_NAMES.includes(n as never), n);
    assert.throws(() => samplerDef("plms"), /unknown 'plms'.*known: ddpm, ddim/);
  });

  test("every sampler lands on the data point when the denoiser is exact (point data)", () => {
    const xT = seededNoise(1)(0, SHAPE);
    for (const name of SAMPLER_NAMES) {
      const d = tableFor(name, 12);
      const r = sample(d, gaussianDenoiser(0.3, 0), xT, { sampler: name, steps: 12, noise: seededNoise(2) });
      const err = tf.tidy(() => tf.max(tf.abs(tf.sub(r.sample, 0.3))).dataSync()[0]!);
      ok(err < 2e-3, `${name} ended ${err} from the data point`);
      r.sample.dispose();
    }
    xT.dispose();
  });

  test("ODE samplers follow the Gaussian's exact probability-flow solution at their order of accuracy", () => {
    // For data N(m, s²), x(σ) = m + sqrt(s² + σ²)·z along the PF-ODE, so x(0) = m + s·(x_init − m)/sqrt(s² + σ_max²).
    // Karras σs on the linear schedule (σ_max 157); the error ratio between 20 and 40 steps estimates 2^order.
    const m = 0.1;
    const s = 0.5;
    const linear = createDiffusion({ schedule: "linear", steps: 1000 });
    const lv = new SigmaView(linear);
    const xT = seededNoise(3)(0, SHAPE);
    const err = (name: string, steps: number) => {
      const sigmas = lv.schedule(steps, "karras");
      const exact = tf.tidy(
        () =>
          tf.add(
            m,
            tf.mul(tf.sub(tf.mul(xT, sigmas[0]!), m), s / Math.sqrt(s * s + sigmas[0]! ** 2)),
          ) as Tensor4D,
      );
      const r = sample(linear, gaussianDenoiser(m, s, lv), xT, {
        sampler: name,
        steps,
        schedule: "karras",
        clipDenoised: false,
      });
      const e = maxAbs(r.sample, exact);
      tf.dispose([r.sample, exact]);
      return e;
    };
    const euler = [err("euler", 20), err("euler", 40)] as const;
    ok(euler[0] / euler[1] > 1.6 && euler[0] / euler[1] < 2.5, `euler: first order (${euler})`);
    for (const name of ["heun", "dpm_2", "dpmpp_2m", "unipc"]) {
      const e = [err(name, 20), err(name, 40)] as const;
      ok(e[0] / e[1] > 3.5, `${name}: not second order (${e})`);
      ok(e[1] < euler[1] / 4, `${name} ${e[1]} not well below euler ${euler[1]} at 40 steps`);
    }
    xT.dispose();
  });

  test("NFE per run: two evaluations per step for heun and dpm_2 (one on the last), one for the rest", () => {
    const xT = seededNoise(4)(0, SHAPE);
    for (const name of SAMPLER_NAMES) {
      const r = sample(tableFor(name, 6), gaussianDenoiser(0.3, 0.2), xT, { sampler: name, steps: 6 });
      assert.equal(r.nfe, samplerDef(name).evalsPerStep === 2 ? 11 : 6, name);
      r.sample.dispose();
    }
    xT.dispose();
  });

  test("no sampler leaks a tensor, with gradient guidance, denoisedFn and either known-region mode", () => {
    const xT = seededNoise(5)(0, SHAPE);
    const image = tf.fill(SHAPE, 0.2) as Tensor4D;
    const mask = tf.tidy(() => tf.concat([tf.ones([2, 4, 2, 1]), tf.zeros([2, 4, 2, 1])], 2)) as Tensor4D;
    const condFn = (x: Tensor4D) => tf.mul(x, -0.01) as Tensor4D;
    const denoisedFn = (x0: Tensor4D) => tf.mul(x0, 0.99) as Tensor4D;
    for (const name of SAMPLER_NAMES) {
      for (const mode of ["x0", "xt"] as const) {
        const before = tf.memory().numTensors;
        const counts: number[] = [];
        const opts: SampleOptions = {
          sampler: name,
          steps: 5,
          condFn,
          denoisedFn,
          known: { image, mask, mode },
          onStep: () => counts.push(tf.memory().numTensors),
        };
        const r = sample(tableFor(name, 5), gaussianDenoiser(0.3, 0.2), xT, opts);
        assert.equal(tf.memory().numTensors, before + 1, `${name} (${mode}) leaves only its result`);
        // Multistep state may grow over the first steps, then stays flat: nothing accumulates per step.
        ok(counts.at(-1)! <= before + 4, `${name} (${mode}) holds ${counts.join(",")} tensors per step`);
        const kept = tf.tidy(
          () => tf.max(tf.abs(tf.sub(tf.mul(r.sample, mask), tf.mul(image, mask)))).dataSync()[0]!,
        );
        if (mode === "xt") ok(kept < 1e-6, `${name}: known pixels end at the image (${kept})`);
        r.sample.dispose();
      }
    }
    tf.dispose([xT, image, mask]);
  });

  test("schedules: diffusers' spacings and k-diffusion's σs", () => {
    assert.deepEqual(spacedTimesteps("linspace", 10, 1000), [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    assert.deepEqual(spacedTimesteps("leading", 10, 1000), [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
    assert.deepEqual(
      spacedTimesteps("trailing", 10, 1000),
      [999, 899, 799, 699, 599, 499, 399, 299, 199, 99],
    );
    // UniPC / DPM-Solver++'s N+1 variant; 499.5 rounds half to even.
    assert.deepEqual(
      spacedTimesteps("linspace", 10, 1000, true),
      [999, 899, 799, 699, 599, 500, 400, 300, 200, 100],
    );
    const k = karrasSigmas(5, 0.1, 80);
    ok(Math.abs(k[0]! - 80) < 1e-9 && Math.abs(k[4]! - 0.1) < 1e-12 && k[5] === 0, `karras ${k}`);
    const def = view.schedule(4, "default");
    ok(Math.abs(def[0]! - view.sigmaMax) < 1e-9 && Math.abs(def[3]! - view.sigmaMin) < 1e-12 && def[4] === 0);
    // σ → t → σ round trip through the log-σ interpolation
    for (const t of [0, 0.25, 17.5, 500, 998.9]) {
      const back = view.sigmaToIndex(view.indexToSigma(t));
      ok(Math.abs(back - t) < 1e-6, `t ${t} → ${back}`);
    }
    assert.throws(
      () =>
        sample(tableFor("ddpm", 4), gaussianDenoiser(0, 1), tf.zeros(SHAPE), {
          sampler: "ddpm",
          schedule: "karras",
        }),
      /schedule 'karras' is not defined for sampler 'ddpm'/,
    );
  });

  test("a strategy paired with a sampler it is not defined for is refused, naming the key", () => {
    assert.throws(
      () => checkStrategySampler({ kind: "cfg++" }, "ddpm", undefined, "--sampler"),
      /--sampler: strategy 'cfg\+\+' is defined for ddim \(eta 0\), euler, euler_ancestral, dpmpp_2m only, not ddpm/,
    );
    // heun and the SDE samplers have no CFG++ form in the paper or its reference code
    for (const sampler of ["heun", "dpm_2", "dpmpp_2m_sde", "dpmpp_3m_sde", "unipc"])
      assert.throws(
        () => checkStrategySampler({ kind: "cfg++" }, sampler, undefined, "--sampler"),
        new RegExp(`not ${sampler}`),
      );
    assert.throws(
      () => checkStrategySampler({ kind: "cfg++" }, "ddim", 0.5, "--sampler"),
      /not ddim \(eta 0.5\)/,
    );
    assert.throws(
      () =>
        checkStrategySampler(
          { kind: "classifier", base: { kind: "cfg++" } } as { kind: string },
          "heun",
          undefined,
          "x",
        ),
      /cfg\+\+/,
    );
    checkStrategySampler({ kind: "cfg++" }, "ddim", undefined, "--sampler");
    for (const sampler of ["euler", "euler_ancestral", "dpmpp_2m"])
      checkStrategySampler({ kind: "cfg++" }, sampler, undefined, "--sampler");
    checkStrategySampler(
      { kind: "cfg", scale: 3 } as { kind: string },
      "dpmpp_2m_sde",
      undefined,
      "--sampler",
    );
    const cfg = (sampler: string[]) =>
      parseSweepConfig(
        { prompts: "a red circle", strategies: [{ kind: "cfg++", scale: 0.5 }], sampler },
        "x.yaml",
      );
    assert.throws(
      () => planCells(cfg(["ddim", "ddpm"]).config, "x.yaml"),
      /x\.yaml: strategies\.0: sampler: strategy 'cfg\+\+'.*not ddpm/,
    );
    assert.equal(planCells(cfg(["ddim"]).config, "x.yaml").length, 1);
    assert.equal(planCells(cfg(["ddim", "euler", "dpmpp_2m"]).config, "x.yaml").length, 3);
    assert.throws(() => planCells(cfg(["euler", "heun"]).config, "x.yaml"), /not heun/);
    assert.throws(
      () =>
        parseSweepConfig(
          { prompts: "a", strategies: [{ kind: "cfg" }], sampler: "ddim", schedule: "karras" },
          "y.yaml",
        ),
      /y\.yaml: schedule: schedule 'karras' is not defined for sampler 'ddim'/,
    );
  });

  test("no module outside the sampler registry switches on a sampler name", () => {
    const names = SAMPLER_NAMES.join("|");
    const pattern = new RegExp(
      `([=!]==?\\s*["'](${names})["'])|(["'](${names})["']\\s*[=!]==?)|(case\\s+["'](${names})["'])`,
    );
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const f of readdirSync(dir)) {
        const p = join(dir, f);
        if (statSync(p).isDirectory()) {
          if (p !== join("src", "core", "samplers")) walk(p);
        } else if (p.endsWith(".ts")) {
          readFileSync(p, "utf8")
            .split("\n")
            .forEach((line, i) => {
              if (pattern.test(line)) offenders.push(`${p}:${i + 1}: ${line.trim()}`);
            });
        }
      }
    };
    walk("src");
    assert.deepEqual(offenders, []);
    // The grep itself catches what it must.
    ok(pattern.test('x === "ddim"') && pattern.test("case 'euler':"));
  });

  test("the samplers README carries the registry's table", () => {
    // Biome pads markdown tables, so cells are compared with their padding collapsed.
    const norm = (t: string) => t.replace(/-{3,}/g, "---").replace(/[ \t]+/g, " ");
    ok(
      norm(readFileSync(join("src", "core", "samplers", "README.md"), "utf8")).includes(norm(samplerTable())),
      "src/core/samplers/README.md: paste samplerTable() (then biome check --write) after changing the registry",
    );
  });

  test("the sampler modules import nothing Node-only (they are bundled for the browser)", () => {
    for (const f of readdirSync(join("src", "core", "samplers")).filter((f) => f.endsWith(".ts"))) {
      const text = readFileSync(join("src", "core", "samplers", f), "utf8");
      ok(!/from "node:|from "(fs|path|worker_threads)"/.test(text), `${f} imports a Node module`);
    }
  });
});
