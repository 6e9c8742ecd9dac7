// GLIDE's classifier-free-guided DDPM loop, replayed from the RECORDED model outputs: the guidance arithmetic,
// each step's p(x_{t-1}|x_t), and the whole trajectory through the real sampler. Then model-driven: the golden GLIDE
// model under the strategies registry's `cfg` strategy at a few recorded steps (a whole model-driven trajectory
// would cost 20 batched forwards and adds nothing the replay and these steps do not already pin down).

import type { GaussianDiffusion } from "../../core/diffusion.ts";
import type { Tensor2D, Tensor4D } from "../../core/engine.ts";
import { tf } from "../../core/engine.ts";
import type { NpyArray } from "../../core/npy.ts";
import { ddpmStep, type RecordedStep, sampleDdpm } from "../../core/samplers.ts";
import type { Denoiser, NoiseSource, Prediction } from "../../core/types.ts";
import { buildStrategy } from "../../strategies/registry.ts";
import { hooksOf } from "../../strategies/strategy.ts";
import {
  compare,
  ErrorAcc,
  floats,
  GoldenError,
  guard,
  nchwToNhwc,
  nhwcToNchw,
  type Row,
  type SectionChecker,
  type SectionContext,
  skipRow,
  stepSlice,
  TOL_SINGLE,
} from "../common.ts";
import {
  goldenDenoiser,
  goldenGlide,
  intTensor,
  maskTensor,
  scoped,
  timed,
  withDenoiser,
  withGoldenModels,
} from "../golden-models.ts";
import { checkLoopArrays } from "../guided.ts";
import { checkTables, diffusionFromMeta } from "../tables.ts";

/**
 * The text2im notebook's classifier-free guidance on a [cond; uncond] batch: eps_g = eps_u + s·(eps_c − eps_u) on
 * the eps channels, written into both halves; the variance channels keep their own values.
 * It works on the recorded [B] batch layout; the strategies' `cfg` (which forms the pair itself) is checked by the
 * model-driven rows.
 */
export function cfgCombine(raw: Tensor4D, channels: number, scale: number): Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, c2] = raw.shape;
    const half = b / 2;
    const eps = tf.slice(raw, [0, 0, 0, 0], [b, h, w, channels]);
    const rest = tf.slice(raw, [0, 0, 0, channels], [b, h, w, c2 - channels]);
    const cond = tf.slice(eps, [0, 0, 0, 0], [half, h, w, channels]);
    const uncond = tf.slice(eps, [half, 0, 0, 0], [half, h, w, channels]);
    const guided = tf.add(uncond, tf.mul(scale, tf.sub(cond, uncond)));
    return tf.concat([tf.concat([guided, guided], 0), rest], 3) as Tensor4D;
  });
}

function toPrediction(out: Tensor4D, channels: number): Prediction {
  const [b, h, w, c2] = out.shape;
  if (c2 === channels) return { out: tf.clone(out), kind: "eps" };
  return {
    out: tf.slice(out, [0, 0, 0, 0], [b, h, w, channels]),
    kind: "eps",
    varValues: tf.slice(out, [0, 0, 0, channels], [b, h, w, c2 - channels]),
  };
}

function noiseReplay(noise: NpyArray): NoiseSource {
  return (k) => stepSlice(noise, "noise_per_step.npy", k);
}

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  const rows: Row[] = [];
  let diffusion: ReturnType<typeof diffusionFromMeta> | undefined;
  rows.push(
    ...guard(s, "diffusion", () => {
      diffusion = diffusionFromMeta(ctx, "small_glide");
      return checkTables(ctx, "diffusion", diffusion, "diffusion");
    }),
  );
  if (!diffusion) return rows;
  const diffusionSteps = diffusion.numTimesteps;

  // The per-step arrays locate a difference; the golden set may leave them out. Then the loop is checked from its
  // inputs (x_T, noise, tokens) to its outputs by the model under the cfg strategy, a whole trajectory.
  const absent = ctx.missing(STEP_ARRAYS);
  if (absent.length) {
    rows.push(
      skipRow(s, "per-step replay", `${absent.join(", ")}: the loop is checked from its inputs by the model`),
    );
    rows.push(...modelTrajectoryRows(ctx));
    return rows;
  }
  let arrays:
    | { xIn: NpyArray; raw: NpyArray; guided: NpyArray; mean: NpyArray; logVar: NpyArray; noise: NpyArray }
    | undefined;
  rows.push(
    ...guard(s, "step arrays", () => {
      const a = {
        xIn: ctx.load("step_x_in.npy"),
        raw: ctx.load("step_model_raw.npy"),
        guided: ctx.load("step_model_guided.npy"),
        mean: ctx.load("step_mean.npy"),
        logVar: ctx.load("step_log_variance.npy"),
        noise: ctx.load("noise_per_step.npy"),
      };
      for (const [k, v] of Object.entries(a)) {
        if (v.shape.length !== 5)
          throw new GoldenError(`${s}/${k}: expected [steps, B, C, H, W], got [${v.shape}]`);
      }
      const S = a.xIn.shape[0]!;
      if (S !== diffusionSteps) {
        throw new GoldenError(`${s}/step_x_in.npy: ${S} steps, the diffusion has ${diffusionSteps}`);
      }
      for (const v of [a.raw, a.guided, a.mean, a.logVar, a.noise]) {
        if (v.shape[0] !== S || v.shape[1] !== a.xIn.shape[1]) {
          throw new GoldenError(
            `${s}: step arrays disagree on [steps, batch] ([${v.shape}] vs [${a.xIn.shape}])`,
          );
        }
      }
      arrays = a;
      return [];
    }),
  );
  if (!arrays) return rows;
  const { xIn, raw, guided, mean, logVar, noise } = arrays;
  const S = xIn.shape[0]!;
  const channels = xIn.shape[2]!;
  const perStep = xIn.shape.slice(1).reduce((a, b) => a * b, 1);
  if (raw.shape[2] !== channels && raw.shape[2] !== 2 * channels) {
    return [
      ...rows,
      ...guard(s, "model outputs", () => {
        throw new GoldenError(
          `${s}/step_model_raw.npy: ${raw.shape[2]} channels, expected ${channels} or ${2 * channels}`,
        );
      }),
    ];
  }
  // A 2C-channel output carries learned-range variance values; otherwise the variance is fixed.
  const d = diffusionFromMeta(
    ctx,
    "small_glide",
    raw.shape[2] === 2 * channels ? "learned_range" : "fixed_small",
  );
  const rawPerStep = raw.shape.slice(1).reduce((a, b) => a * b, 1);

  const timesteps = ["step_t_respaced.npy", "step_t_model.npy"];
  if (ctx.missing(timesteps).length)
    rows.push(skipRow(s, "step timesteps", ctx.missing(timesteps).join(", ")));
  else
    rows.push(
      ...guard(s, "step timesteps", () => {
        const respaced = ctx.loadNumbers("step_t_respaced.npy");
        const model = ctx.loadNumbers("step_t_model.npy");
        const B = model.length / S;
        const expectedModel = respaced.flatMap((i) => Array<number>(B).fill(d.timestepMap[i] ?? Number.NaN));
        const expectedRespaced = Array.from({ length: S }, (_, k) => S - 1 - k);
        return [
          compare(s, "step t respaced", expectedRespaced, respaced, 0),
          compare(s, "step t model (timestep_map)", expectedModel, model, 0, "models receive the original t"),
        ];
      }),
    );

  let scale = Number.NaN;
  rows.push(
    ...guard(s, "cfg guided output", () => {
      scale = Number(ctx.meta("guidance_scale"));
      const acc = new ErrorAcc();
      const ref = floats(guided, "step_model_guided.npy");
      for (let k = 0; k < S; k++) {
        const got = tf.tidy(() => {
          const out = cfgCombine(stepSlice(raw, "step_model_raw.npy", k), channels, scale);
          return nhwcToNchw(out);
        });
        acc.add(ref.subarray(k * rawPerStep, (k + 1) * rawPerStep), got, k);
      }
      return acc.row(s, `cfg guided output (scale ${scale}, ${S} steps)`, TOL_SINGLE, acc.worstNote());
    }),
  );
  if (Number.isNaN(scale)) return rows;

  // Replays the recorded, guided model outputs; the loop index k picks the recorded step. Intermediates are
  // freed by the step's own tidy scope.
  const denoise: Denoiser = (_x, step) =>
    toPrediction(cfgCombine(stepSlice(raw, "step_model_raw.npy", step.k), channels, scale), channels);
  const noiseSource = noiseReplay(noise);

  rows.push(
    ...guard(s, "single steps", () => {
      const accMean = new ErrorAcc();
      const accLogVar = new ErrorAcc();
      const accNext = new ErrorAcc();
      const meanRef = floats(mean, "step_mean.npy");
      const logVarRef = floats(logVar, "step_log_variance.npy");
      const xInRef = floats(xIn, "step_x_in.npy");
      for (let k = 0; k < S; k++) {
        const rec: RecordedStep[] = [];
        tf.tidy(() => {
          const x = stepSlice(xIn, "step_x_in.npy", k);
          const out = ddpmStep(d, denoise, x, S - 1 - k, {
            noise: noiseSource,
            clipDenoised: true,
            recordSteps: rec,
          });
          const r = rec[0]!;
          const toNchw = (a: Float32Array) =>
            nhwcToNchw(tf.tensor4d(a, r.shape as [number, number, number, number]));
          const sl = (a: Float32Array) => a.subarray(k * perStep, (k + 1) * perStep);
          accMean.add(sl(meanRef), toNchw(r.mean), k);
          accLogVar.add(sl(logVarRef), toNchw(r.logVariance), k);
          if (k + 1 < S)
            accNext.add(xInRef.subarray((k + 1) * perStep, (k + 2) * perStep), nhwcToNchw(out.sample), k);
        });
      }
      return [
        accMean.row(s, "step mean (learned-range pMeanVariance)", TOL_SINGLE, accMean.worstNote()),
        accLogVar.row(s, "step log variance", TOL_SINGLE, accLogVar.worstNote()),
        accNext.row(s, "step sample → next step_x_in", TOL_SINGLE, accNext.worstNote()),
      ];
    }),
  );

  rows.push(
    ...guard(s, "trajectory", () => {
      const xT = ctx.load("x_T.npy");
      // samples.npy (the guided half) is the loop's output; the full batch is an aid.
      const firstHalf = ctx.load("samples.npy");
      const full = ctx.has("samples_full_batch.npy") ? ctx.load("samples_full_batch.npy") : undefined;
      const rec: RecordedStep[] = [];
      const sample = tf.tidy(() => {
        const x0 = nchwToNhwc(floats(xT, "x_T.npy", 4), xT.shape);
        const out = sampleDdpm(d, denoise, x0, { noise: noiseSource, clipDenoised: true, recordSteps: rec });
        return nhwcToNchw(out);
      });
      const accX = new ErrorAcc();
      const xInRef = floats(xIn, "step_x_in.npy");
      for (const r of rec) {
        const got = tf.tidy(() =>
          nhwcToNchw(tf.tensor4d(r.xIn, r.shape as [number, number, number, number])),
        );
        accX.add(xInRef.subarray(r.k * perStep, (r.k + 1) * perStep), got, r.k);
      }
      const n = firstHalf.data.length;
      return [
        ctx.trajectoryRow((tol) =>
          accX.row(s, `trajectory x_t at every step (${S} steps)`, tol, accX.worstNote()),
        ),
        full
          ? ctx.trajectoryRow((tol) =>
              compare(
                s,
                "trajectory samples_full_batch",
                floats(full, "samples_full_batch.npy"),
                sample,
                tol,
              ),
            )
          : skipRow(s, "trajectory samples_full_batch", "samples_full_batch.npy"),
        ctx.trajectoryRow((tol) =>
          compare(
            s,
            "trajectory samples (guided half)",
            floats(firstHalf, "samples.npy"),
            sample.subarray(0, n),
            tol,
          ),
        ),
      ];
    }),
  );
  rows.push(...modelRows(ctx, d, xIn, guided, scale));
  return rows;
}

/** The per-step arrays of the loop (aids: a golden set may leave them out). */
const STEP_ARRAYS = [
  "step_x_in.npy",
  "step_model_raw.npy",
  "step_model_guided.npy",
  "step_mean.npy",
  "step_log_variance.npy",
];

/**
 * The golden prompts' tokens for the strategies' encoder. The recorded batch is [prompts; unconditional]: a
 * prompt reads its meta.prompts row, "" the j-th unconditional row.
 */
function goldenEncode(ctx: SectionContext, listed: readonly string[], half: number) {
  const rowOf = (p: string, j: number) => (p === "" ? half + j : listed.indexOf(p));
  return (ps: readonly string[]) =>
    tf.tidy(() => {
      const idx = tf.tensor1d(
        ps.map((p, j) => {
          const r = rowOf(p, j);
          if (r < 0)
            throw new GoldenError(`manifest.json: prompt ${JSON.stringify(p)} is not in meta.prompts`);
          return r;
        }),
        "int32",
      );
      return {
        tokens: tf.gather(intTensor(ctx, "in_tokens.npy"), idx) as Tensor2D,
        mask: tf.gather(maskTensor(ctx, "in_mask.npy"), idx) as Tensor2D,
      };
    });
}

/**
 * Without the per-step arrays: the whole loop from x_T and the stored noise, the model under the cfg strategy. The
 * recorded batch is [x; x] with [prompts; unconditional] tokens, and the notebook keeps the first half, so that
 * half's x_T and noise are the strategy's (which forms the pair itself).
 */
function modelTrajectoryRows(ctx: SectionContext): Row[] {
  const s = ctx.section;
  return withGoldenModels(ctx, [goldenGlide], ([unet]) =>
    guard(s, "trajectory", () => {
      const scale = Number(ctx.meta("guidance_scale"));
      const listed = ctx.meta<string[]>("prompts");
      const xT = ctx.load("x_T.npy");
      const noise = ctx.load("noise_per_step.npy");
      const diffusion = diffusionFromMeta(ctx, "small_glide");
      checkLoopArrays(ctx, xT, noise, diffusion.numTimesteps);
      const [B, C, H, W] = xT.shape as [number, number, number, number];
      const half = B / 2;
      const prompts = listed.slice(0, half);
      if (!Number.isInteger(half) || prompts.length !== half)
        throw new GoldenError(
          `${s}: a batch of ${B} is not ${listed.length} prompts + as many unconditional rows`,
        );
      const { value, seconds, runtime } = withDenoiser(ctx, unet, (model) => {
        const binding = buildStrategy(
          { kind: "cfg", scale },
          { model, encode: goldenEncode(ctx, listed, half) },
          `${s} strategy`,
        ).bind(prompts);
        try {
          return scoped(() => {
            const x = tf.slice(nchwToNhwc(floats(xT, "x_T.npy", 4), xT.shape), [0, 0, 0, 0], [half, H, W, C]);
            const out = sampleDdpm(diffusion, binding.denoise, x, {
              ...hooksOf(binding),
              noise: (k): Tensor4D =>
                tf.slice(stepSlice(noise, "noise_per_step.npy", k), [0, 0, 0, 0], [half, H, W, C]),
              clipDenoised: binding.clipDenoised ?? true,
            });
            return nhwcToNchw(out);
          });
        } finally {
          binding.dispose();
        }
      });
      return ctx.trajectoryRow((tol) =>
        compare(
          s,
          `trajectory samples, model-driven (cfg scale ${scale}, ${diffusion.numTimesteps} steps)`,
          floats(ctx.load("samples.npy"), "samples.npy"),
          value,
          tol,
          `${seconds.toFixed(1)} s, ${runtime}`,
        ),
      );
    }),
  );
}

/** The loop steps whose recorded inputs are re-run through the model: first, middle and last. */
const modelSteps = (S: number) => [...new Set([0, Math.floor(S / 2), S - 1])];

function modelRows(
  ctx: SectionContext,
  d: GaussianDiffusion,
  xIn: NpyArray,
  guided: NpyArray,
  scale: number,
): Row[] {
  const s = ctx.section;
  return withGoldenModels(ctx, [goldenGlide], ([unet]) =>
    guard(s, "model-driven cfg", () => {
      const [S, B, C, H, W] = xIn.shape as [number, number, number, number, number];
      const half = B / 2;
      const listed = ctx.meta<string[]>("prompts");
      const prompts = listed.slice(0, half);
      if (!Number.isInteger(half) || prompts.length !== half) {
        throw new GoldenError(
          `${s}: a batch of ${B} is not ${listed.length} prompts + as many unconditional rows`,
        );
      }
      const encode = goldenEncode(ctx, listed, half);
      const denoiser = goldenDenoiser(ctx, unet);
      const acc = new ErrorAcc();
      const steps = modelSteps(S);
      const ref = floats(guided, "step_model_guided.npy");
      const perStep = B * guided.shape[2]! * H * W;
      const { seconds } = timed(() => {
        try {
          const binding = buildStrategy(
            { kind: "cfg", scale },
            { model: denoiser.model, encode },
            `${s} strategy`,
          ).bind(prompts);
          try {
            for (const k of steps) {
              scoped(() => {
                const x = tf.slice(stepSlice(xIn, "step_x_in.npy", k), [0, 0, 0, 0], [half, H, W, C]);
                const step = d.stepInfo(S - 1 - k);
                const pred = binding.denoise(x, step);
                const out = pred.varValues ? tf.concat([pred.out, pred.varValues], 3) : pred.out;
                const start = k * perStep;
                acc.add(ref.subarray(start, start + perStep / 2), nhwcToNchw(out), k);
              });
            }
          } finally {
            binding.dispose();
          }
        } finally {
          denoiser.dispose();
        }
      });
      return acc.row(
        s,
        `model → cfg strategy output at steps ${steps.join(", ")} (scale ${scale})`,
        TOL_SINGLE,
        `${acc.worstNote() ?? ""}${acc.worstNote() ? "; " : ""}${seconds.toFixed(1)} s, ${denoiser.runtime}`,
      );
    }),
  );
}

export const glideCfg: SectionChecker = { name: "glide_cfg", run };
