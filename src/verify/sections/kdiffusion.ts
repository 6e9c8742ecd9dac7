// The σ-space samplers against k-diffusion's own sampler functions (and diffusers' UniPC scheduler) on the golden
// GLIDE-small denoiser: the conditional model alone and classifier-free guidance (s from the manifest) on eps, the
// same x_T and, for the stochastic samplers, the same stored per-step noise on both sides, D clamped to [-1, 1] on
// both (a wrapper around k-diffusion's denoiser; diffusers' thresholding at sample_max_value 1). The arrays come
// from the repository's fixture (tools/golden/kdiffusion_golden.py) unless the golden directory has its own
// kdiffusion/; the weights always come from the golden directory. Three checks per case:
// - teacher-forced: our sampler driven by the reference's recorded D outputs in call order (no network), our σ and
//   x_t at every call and x at every step asserted equal to the reference's: the sampler arithmetic alone, to the
//   float32 floor (TOL_TEACHER_FORCED);
// - single forward: our network on the reference's recorded inputs (x_t, t) against its recorded ε: the port's
//   per-call accuracy on this very trajectory, which sets the perturbation δ of the spread below;
// - end-to-end: the whole trajectory with our network; tolerance max(1e-4, the reference's own spread across torch
//   thread settings, the reference's spread when its ε is multiplied by 1 + δ·N(0, 1), max over the recorded seeds);
//   where the distance falls among the reference's own spreads across CPU configurations is printed beside it.
import { join } from "node:path";
import { createDiffusion, type GaussianDiffusion } from "../../core/diffusion.ts";
import type { Tensor1D, Tensor2D, Tensor4D } from "../../core/engine.ts";
import { tf } from "../../core/engine.ts";
import { npyToNumbers } from "../../core/npy.ts";
import { REPO_ROOT } from "../../core/paths.ts";
import { SigmaView } from "../../core/samplers/sigma.ts";
import { type ScheduleName, sample } from "../../core/samplers.ts";
import type { Denoiser, NoiseSource, StepInfo } from "../../core/types.ts";
import type { ModelFn } from "../../strategies/strategy.ts";
import {
  compare,
  ErrorAcc,
  floats,
  GoldenError,
  guard,
  loadManifest,
  nchwToNhwc,
  nhwcToNchw,
  type Row,
  type SectionChecker,
  SectionContext,
  TOL_SINGLE,
  TOL_TRAJECTORY,
} from "../common.ts";
import {
  goldenGlide,
  intTensor,
  maskTensor,
  scoped,
  withDenoiser,
  withGoldenModels,
} from "../golden-models.ts";
import { scheduleAlias } from "../tables.ts";

/**
 * The sampler arithmetic alone against the reference's, on the same D: float32 rounding of the same operations,
 * which the ODE's large early σ ratios (σ_max ≈ 2·10⁴) multiply by a few ulps at most.
 */
export const TOL_TEACHER_FORCED = 1e-6;

export const KDIFFUSION_FIXTURE = join(REPO_ROOT, "test", "fixtures", "golden-kdiffusion");

interface Case {
  key: string;
  sampler: string;
  schedule: ScheduleName;
  guidance: "cond" | "cfg";
  /** Network calls the reference made (per-call records in calls/). */
  calls: number;
  /** Where the recorded per-step x lives: k-diffusion's x_σ, or diffusers' VP x_t (UniPC). */
  steps_x_space: "sigma" | "vp";
}

export interface Spreads {
  spread?: Record<string, number>;
  spread_from?: string;
  /** Per case, one run per seed of the reference with ε·(1 + δ·N(0, 1)): its max relative distance to the fixture. */
  perturb_spread?: Record<string, { delta: number; seed: number; spread: number }[]>;
  /**
   * Per case, one run per CPU configuration of the reference (torch threads × the kernel dispatch of another x86
   * CPU, tools/golden/kdiffusion_config_spread.sh): its max relative distance to the fixture.
   */
  config_spread?: Record<string, { config: string; spread: number }[]>;
}

/** JSON with sorted keys, so that two config blocks compare by content. */
const sorted = (v: unknown): string =>
  JSON.stringify(v, (_k, x) =>
    x && typeof x === "object" && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1)))
      : x,
  );

/** The section's arrays: the golden directory's own kdiffusion/ when present, else the repository's fixture. */
function arraysContext(ctx: SectionContext): SectionContext {
  if (ctx.has("")) return ctx;
  const { manifest, error } = loadManifest(KDIFFUSION_FIXTURE);
  return new SectionContext(KDIFFUSION_FIXTURE, ctx.section, manifest, error, ctx.runtime);
}

/** A step's timesteps: int32 where integral (as everywhere), float32 where the σ view lands between table entries. */
const timesteps = (n: number, t: number) =>
  tf.fill([n], t, Number.isInteger(t) ? "int32" : "float32") as Tensor1D;

/** ε of the case's guidance at x with per-row timesteps `ts`: the conditional row, or cfg on [cond; uncond]. */
function guidedEps(
  model: ModelFn,
  tokens: Tensor2D,
  mask: Tensor2D,
  c: Case,
  scale: number,
  x: Tensor4D,
  ts: Tensor1D,
): Tensor4D {
  return tf.tidy(() => {
    const b = x.shape[0];
    const rows = (t: Tensor2D, i: number) => tf.tile(tf.slice(t, [i, 0], [1, -1]), [b, 1]) as Tensor2D;
    if (c.guidance === "cond")
      return model(x, ts, { tokens: rows(tokens, 0), mask: rows(mask, 0) }).out as Tensor4D;
    // [cond; uncond] on the same x, eps_u + s·(eps_c − eps_u) (GLIDE's text2im notebook)
    const out = model(tf.concat([x, x]) as Tensor4D, tf.concat([ts, ts]) as Tensor1D, {
      tokens: tf.concat([rows(tokens, 0), rows(tokens, 1)]) as Tensor2D,
      mask: tf.concat([rows(mask, 0), rows(mask, 1)]) as Tensor2D,
    });
    const [cond, uncond] = tf.split(out.out, [b, b]) as [Tensor4D, Tensor4D];
    return tf.add(uncond, tf.mul(tf.sub(cond, uncond), scale)) as Tensor4D;
  });
}

function denoiserFor(model: ModelFn, tokens: Tensor2D, mask: Tensor2D, c: Case, scale: number): Denoiser {
  return (x, step) => ({
    out: guidedEps(model, tokens, mask, c, scale, x, timesteps(x.shape[0], step.t)),
    kind: "eps" as const,
  });
}

/** Relative max-abs error of an accumulator (0 when nothing was compared). */
const relOf = (acc: ErrorAcc) => (acc.refMax > 0 ? acc.maxAbs / acc.refMax : acc.maxAbs);

/**
 * Teacher-forced: our sampler with the reference's D replayed in call order (through the `denoisedFn` hook over a
 * network that predicts ε = 0, so the sampler sees exactly the recorded D after the clamp, a no-op on values in
 * [−1, 1]). At every call our σ (the view's σ at the call's timestep) and x_t = x_σ/sqrt(1 + σ²) must equal the
 * reference's, at every step's first call our x the reference's per-step x, and the sample the reference's.
 */
function teacherForced(
  s: string,
  fx: SectionContext,
  diffusion: GaussianDiffusion,
  c: Case,
  steps: number,
  noise: NoiseSource,
  xT: Tensor4D,
  label: string,
): Row {
  const sigmas = npyToNumbers(fx.load(`calls/${c.key}_sigma.npy`));
  const ts = npyToNumbers(fx.load(`calls/${c.key}_t.npy`));
  const xtArr = fx.load(`calls/${c.key}_x_t.npy`);
  const xts = floats(xtArr, `calls/${c.key}_x_t.npy`, 4);
  const Ds = floats(fx.load(`calls/${c.key}_D.npy`), `calls/${c.key}_D.npy`, 4);
  const stepsX = floats(fx.load(`steps/${c.key}_x.npy`), `steps/${c.key}_x.npy`, 4);
  const n = sigmas.length;
  const per = [1, ...xtArr.shape.slice(1)];
  const size = per.reduce((a, b) => a * b, 1);
  if (xts.length !== n * size || Ds.length !== n * size)
    throw new GoldenError(`calls/${c.key}_*: ${n} σs but ${xts.length / size} x_t and ${Ds.length / size} D`);
  const view = new SigmaView(diffusion);
  const xAcc = new ErrorAcc();
  const stepAcc = new ErrorAcc();
  let sigmaRel = 0;
  let tAbs = 0;
  // diffusers' σs come from its float32 ᾱ table (~1e-5 off float64 near t = T); there the reference's σ is taken
  // from the float64 table at its (integral, checked) timestep, and its own deviation is reported.
  let refTableRel = 0;
  let call = -1;
  let lastK = -1;
  const denoise: Denoiser = (xt, step: StepInfo) => {
    call++;
    if (call >= n) throw new GoldenError(`our sampler made more than the reference's ${n} calls`);
    const sigma = view.indexToSigma(step.t);
    tAbs = Math.max(tAbs, Math.abs(step.t - ts[call]!));
    let ref = sigmas[call]!;
    if (c.steps_x_space === "vp") {
      const t = ts[call]!;
      if (!Number.isInteger(t))
        throw new GoldenError(`calls/${c.key}_t.npy: diffusers' timestep ${t} is fractional`);
      refTableRel = Math.max(refTableRel, Math.abs(ref - view.sigmas[t]!) / view.sigmas[t]!);
      ref = view.sigmas[t]!;
    }
    sigmaRel = Math.max(sigmaRel, Math.abs(sigma - ref) / ref);
    const got = nhwcToNchw(xt);
    xAcc.add(xts.subarray(call * size, (call + 1) * size), got, call);
    if (step.k !== lastK) {
      lastK = step.k;
      if ((step.k + 1) * size > stepsX.length)
        throw new GoldenError(`steps/${c.key}_x.npy: no step ${step.k}`);
      // ours in the recorded space: x_σ = x_t·sqrt(1 + σ²) (k-diffusion), or x_t itself (diffusers' UniPC)
      const k = c.steps_x_space === "vp" ? 1 : Math.sqrt(1 + sigma * sigma);
      stepAcc.add(
        stepsX.subarray(step.k * size, (step.k + 1) * size),
        got.map((v) => v * k),
        step.k,
      );
    }
    return { out: tf.zerosLike(xt), kind: "eps" as const };
  };
  const replay = (_x0: Tensor4D, _step: StepInfo) =>
    nchwToNhwc(Ds.subarray(call * size, (call + 1) * size), per);
  const got = scoped(() => {
    const r = sample(diffusion, denoise, xT, {
      sampler: c.sampler,
      steps,
      schedule: c.schedule,
      noise,
      denoisedFn: replay,
      clipDenoised: true,
    });
    return nhwcToNchw(r.sample);
  });
  if (call + 1 !== n) throw new GoldenError(`our sampler made ${call + 1} calls, the reference ${n}`);
  const final = new ErrorAcc();
  final.add(floats(fx.load(`${c.key}.npy`), `${c.key}.npy`), got);
  // t relative to T (its range), the others to the reference's max |value|
  const parts = {
    σ: sigmaRel,
    t: tAbs / diffusion.numTimesteps,
    x_t: relOf(xAcc),
    "step x": relOf(stepAcc),
    sample: relOf(final),
  };
  const rel = Math.max(...Object.values(parts));
  const note = [
    `${n} calls`,
    ...Object.entries(parts).map(([k, v]) => `${k} ${v.toExponential(1)}`),
    ...(c.steps_x_space === "vp"
      ? [`(diffusers' float32 σ table ${refTableRel.toExponential(1)} off float64)`]
      : []),
  ].join(", ");
  return {
    section: s,
    case: `teacher-forced: ${label}`,
    maxAbs: Math.max(final.maxAbs, xAcc.maxAbs, stepAcc.maxAbs),
    rel,
    tol: TOL_TEACHER_FORCED,
    pass: rel <= TOL_TEACHER_FORCED,
    note,
  };
}

/**
 * Our network's ε at the reference's recorded (x_t, t) of every call (NCHW, call-major, as calls/<key>_eps.npy),
 * batched (integral and fractional timesteps apart, as in sampling), with the recorded ε beside it.
 */
function epsAtReference(
  fx: SectionContext,
  model: ModelFn,
  tokens: Tensor2D,
  mask: Tensor2D,
  c: Case,
  scale: number,
): { got: Float32Array; ref: Float32Array; shape: number[]; calls: number } {
  const ts = npyToNumbers(fx.load(`calls/${c.key}_t.npy`));
  const xtArr = fx.load(`calls/${c.key}_x_t.npy`);
  const xts = floats(xtArr, `calls/${c.key}_x_t.npy`, 4);
  const refArr = fx.load(`calls/${c.key}_eps.npy`);
  const ref = floats(refArr, `calls/${c.key}_eps.npy`, 4);
  const per = [1, ...xtArr.shape.slice(1)];
  const size = per.reduce((a, b) => a * b, 1);
  const got = new Float32Array(ref.length);
  for (const integral of [true, false]) {
    const idx = ts.flatMap((t, i) => (Number.isInteger(t) === integral ? [i] : []));
    if (!idx.length) continue;
    const out = scoped(() => {
      const x = tf.concat(
        idx.map((i) => nchwToNhwc(xts.subarray(i * size, (i + 1) * size), per)),
      ) as Tensor4D;
      const t = tf.tensor1d(
        idx.map((i) => ts[i]!),
        integral ? "int32" : "float32",
      ) as Tensor1D;
      return nhwcToNchw(guidedEps(model, tokens, mask, c, scale, x, t));
    });
    idx.forEach((i, j) => {
      got.set(out.subarray(j * size, (j + 1) * size), i * size);
    });
  }
  return { got, ref, shape: refArr.shape, calls: ts.length };
}

/**
 * Single forward: our network at the reference's recorded inputs of every call against its recorded ε.
 * `rms` = RMS(Δε)/RMS(ε), the δ of the perturbation.
 */
function forwardAccuracy(
  s: string,
  fx: SectionContext,
  model: ModelFn,
  tokens: Tensor2D,
  mask: Tensor2D,
  c: Case,
  scale: number,
  label: string,
): { row: Row; rms: number } {
  const { got, ref, calls } = epsAtReference(fx, model, tokens, mask, c, scale);
  let d2 = 0;
  let r2 = 0;
  for (let i = 0; i < ref.length; i++) {
    d2 += (got[i]! - ref[i]!) ** 2;
    r2 += ref[i]! ** 2;
  }
  const rms = Math.sqrt(d2 / r2);
  const row = compare(
    s,
    `single forward: ${label}`,
    ref,
    got,
    TOL_SINGLE,
    `ε at the reference's ${calls} inputs; RMS(Δε)/RMS(ε) ${rms.toExponential(2)}`,
  );
  return { row, rms };
}

/** A case's runs of one kind: their count, median spread and the spreads, ascending. */
interface SpreadRuns {
  n: number;
  median: number;
  sorted: number[];
}

const spreadRuns = (spreads: number[]): SpreadRuns => {
  const v = [...spreads].sort((a, b) => a - b);
  return { n: v.length, median: v[Math.floor(v.length / 2)]!, sorted: v };
};

interface EndToEndTol {
  tol: number;
  from?: string;
  /** The perturbation runs of the case, and their δ. */
  perturb?: SpreadRuns & { delta: number };
  /** The CPU-configuration runs of the case (not a term of `tol`). */
  configs?: SpreadRuns;
}

/** The end-to-end tolerance of a case and where it comes from (module comment). */
export function endToEndTol(spreads: Spreads, key: string): EndToEndTol {
  const thread = spreads.spread?.[key];
  const runs = spreads.perturb_spread?.[key] ?? [];
  const deltas = new Set(runs.map((r) => r.delta));
  if (deltas.size > 1)
    throw new GoldenError(`manifest: perturb_spread.${key} mixes δs ${[...deltas].join(", ")}`);
  const out: EndToEndTol = { tol: TOL_TRAJECTORY };
  if (thread !== undefined && thread > out.tol) {
    out.tol = thread;
    out.from = `the reference's ${spreads.spread_from ?? "thread"} spread`;
  }
  if (runs.length) {
    const delta = runs[0]!.delta;
    out.perturb = { delta, ...spreadRuns(runs.map((r) => r.spread)) };
    const max = out.perturb.sorted.at(-1)!;
    if (max > out.tol) {
      out.tol = max;
      out.from = `max of the reference's spread under ε·(1 + ${delta}·N(0,1)), ${runs.length} seeds`;
    }
  }
  // Reported beside the row, not a term of the tolerance: on a CPU without AVX2 the reference's own heun and dpm_2
  // trajectories from σ_max ≈ 2·10⁴ end 2.0 and 0.14 from the fixture, which would make those checks vacuous.
  const configs = spreads.config_spread?.[key] ?? [];
  if (configs.length) out.configs = spreadRuns(configs.map((r) => r.spread));
  return out;
}

/** What every check of the fixture shares: its cases, the diffusion tables, x_T and the stored per-step noise. */
function setup(fx: SectionContext) {
  const list = fx.meta<Case[]>("kdiffusion", "cases");
  const steps = Number(fx.meta("kdiffusion", "steps"));
  const scale = Number(fx.meta("kdiffusion", "cfg_scale"));
  const label = (c: Case) =>
    `${c.sampler} ${c.schedule} σs, ${c.guidance === "cfg" ? `cfg s=${scale}` : "conditional"}, ${steps} steps`;
  const diffusion = createDiffusion({
    schedule: scheduleAlias(fx.meta<string>("small_glide", "noise_schedule")),
    steps: Number(fx.meta("small_glide", "diffusion_steps")),
    modelVarType: "learned_range",
  });
  const xTArr = fx.load("x_T.npy");
  const noiseArr = fx.load("noise_per_step.npy");
  const allNoise = floats(noiseArr, "noise_per_step.npy", 5);
  const per = noiseArr.shape.slice(1);
  const size = per.reduce((a, b) => a * b, 1);
  const noise: NoiseSource = (k) => {
    if (k >= noiseArr.shape[0]!) throw new GoldenError(`noise_per_step.npy: no noise for step ${k}`);
    return nchwToNhwc(allNoise.subarray(k * size, (k + 1) * size), per);
  };
  const xTOf = () => nchwToNhwc(floats(xTArr, "x_T.npy", 4), xTArr.shape);
  return { list, steps, scale, label, diffusion, noise, xTOf };
}

/**
 * The teacher-forced rows of every case: the sampler arithmetic alone, no network (about a second in all; the
 * repository's tests run it on the fixture).
 */
export function teacherForcedRows(fx: SectionContext): Row[] {
  const { list, steps, label, diffusion, noise, xTOf } = setup(fx);
  return list.flatMap((c) =>
    guard(fx.section, `teacher-forced: ${c.key}`, () =>
      scoped(() => teacherForced(fx.section, fx, diffusion, c, steps, noise, xTOf(), label(c))),
    ),
  );
}

/**
 * The port's per-call forward error on each case's reference trajectory (`keys`, default every case): our ε at the
 * reference's recorded inputs minus its recorded ε, call-major NCHW. tools/golden/kdiffusion_port_eps.ts writes it
 * for the generator's --add-eps-error, which runs the reference with exactly these errors added to its ε.
 */
export function portEpsError(
  ctx: SectionContext,
  keys?: readonly string[],
): Map<string, { delta: Float32Array; shape: number[] }> {
  const fx = arraysContext(ctx);
  const { list, scale } = setup(fx);
  const unknown = (keys ?? []).filter((k) => !list.some((c) => c.key === k));
  if (unknown.length)
    throw new GoldenError(`unknown case ${unknown.join(", ")} (known: ${list.map((c) => c.key).join(", ")})`);
  const out = new Map<string, { delta: Float32Array; shape: number[] }>();
  const rows = withGoldenModels(ctx, [goldenGlide], ([unet]) => {
    for (const c of list.filter((c) => !keys?.length || keys.includes(c.key))) {
      const { value } = withDenoiser(ctx, unet, (model) =>
        scoped(() => {
          const tokens = intTensor(fx, "tokens.npy") as Tensor2D;
          const mask = maskTensor(fx, "mask.npy");
          return epsAtReference(fx, model, tokens, mask, c, scale);
        }),
      );
      out.set(c.key, { delta: value.got.map((v, i) => v - value.ref[i]!), shape: value.shape });
    }
    return [];
  });
  const failed = rows.find((r) => !r.pass);
  if (failed) throw new GoldenError(`${failed.case}: ${failed.note ?? "failed"}`);
  return out;
}

/** The fixture as a section context (its arrays under kdiffusion/). */
export function fixtureContext(dir = KDIFFUSION_FIXTURE): SectionContext {
  const { manifest, error } = loadManifest(dir);
  return new SectionContext(dir, "kdiffusion", manifest, error);
}

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  const fx = arraysContext(ctx);
  const cases = guard(s, "cases", () => {
    if (sorted(fx.meta("small_glide")) !== sorted(ctx.meta("small_glide")))
      throw new GoldenError(
        `${fx.dir}: meta.small_glide differs from the golden model's: regenerate the fixture`,
      );
    return [];
  });
  if (cases.length) return cases;
  const { list, steps, scale, label, diffusion, noise, xTOf } = setup(fx);
  const spreads = (fx.manifest?.meta?.kdiffusion ?? {}) as Spreads;
  const rows = teacherForcedRows(fx);
  /** Per case, the measured RMS(Δε)/RMS(ε) over the δ its perturbation runs assumed. */
  const coverage: { key: string; rms: number; delta?: number }[] = [];
  rows.push(
    ...withGoldenModels(ctx, [goldenGlide], ([unet]) =>
      list.flatMap((c) =>
        guard(s, c.key, () => {
          const { value, seconds, runtime } = withDenoiser(ctx, unet, (model) =>
            scoped(() => {
              const tokens = intTensor(fx, "tokens.npy") as Tensor2D;
              const mask = maskTensor(fx, "mask.npy");
              const fwd = forwardAccuracy(s, fx, model, tokens, mask, c, scale, label(c));
              const r = sample(diffusion, denoiserFor(model, tokens, mask, c, scale), xTOf(), {
                sampler: c.sampler,
                steps,
                schedule: c.schedule,
                noise,
                clipDenoised: true,
              });
              return { fwd, got: nhwcToNchw(r.sample) };
            }),
          );
          const e2e = endToEndTol(spreads, c.key);
          coverage.push({
            key: c.key,
            rms: value.fwd.rms,
            ...(e2e.perturb ? { delta: e2e.perturb.delta } : {}),
          });
          const row = compare(
            s,
            `end-to-end: ${label(c)}`,
            floats(fx.load(`${c.key}.npy`), `${c.key}.npy`),
            value.got,
            e2e.tol,
            `${seconds.toFixed(1)} s, ${runtime}`,
          );
          if (e2e.from) row.tolFrom = e2e.from;
          // where our distance falls among each kind's spreads (the tolerance takes only their max)
          const rank = (r: SpreadRuns, what: string) => {
            const below = r.sorted.filter((x) => x < row.rel).length;
            row.note += `; ${(row.rel / r.median).toFixed(1)}× the median ${what} spread (${r.median.toExponential(1)}), above ${below} of ${r.n}`;
          };
          if (e2e.perturb) rank(e2e.perturb, "perturbed");
          if (e2e.configs) rank(e2e.configs, "CPU-configuration");
          return [value.fwd.row, row];
        }),
      ),
    ),
  );
  if (coverage.length) {
    // The perturbation runs stand for the port only if their δ is at least the port's measured forward error.
    const worst = coverage.reduce((a, b) =>
      (b.delta ? b.rms / b.delta : Number.POSITIVE_INFINITY) >
      (a.delta ? a.rms / a.delta : Number.POSITIVE_INFINITY)
        ? b
        : a,
    );
    const ratio = worst.delta ? worst.rms / worst.delta : Number.POSITIVE_INFINITY;
    rows.push({
      section: s,
      case: "single forward: measured RMS(Δε)/RMS(ε) over the spread runs' δ, worst case",
      maxAbs: worst.rms,
      rel: ratio,
      tol: 1,
      pass: ratio <= 1,
      note: `${worst.key}: RMS ${worst.rms.toExponential(2)}, δ ${worst.delta ?? "not recorded"}`,
    });
  }
  return rows;
}

export const kdiffusion: SectionChecker = { name: "kdiffusion", fixture: KDIFFUSION_FIXTURE, run };
