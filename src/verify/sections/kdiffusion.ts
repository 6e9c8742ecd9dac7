// The σ-space samplers against k-diffusion's own sampler functions (and diffusers' UniPC scheduler) on the golden
// GLIDE-small denoiser: the conditional model alone and classifier-free guidance (s from the manifest) on eps, the
// same x_T and, for the stochastic samplers, the same stored per-step noise on both sides, D clamped to [-1, 1] on
// both (a wrapper around k-diffusion's denoiser; diffusers' thresholding at sample_max_value 1). The arrays come from the repository's fixture (tools/golden/kdiffusion_golden.py) unless the golden
// directory has its own kdiffusion/; the weights always come from the golden directory. Tolerance per case: 1e-4
// relative, or the reference's own spread across thread settings where the fixture records a larger one.
import { join } from "node:path";
import { createDiffusion } from "../../core/diffusion.ts";
import type { Tensor1D, Tensor2D, Tensor4D } from "../../core/engine.ts";
import { tf } from "../../core/engine.ts";
import { REPO_ROOT } from "../../core/paths.ts";
import { type ScheduleName, sample } from "../../core/samplers.ts";
import type { Denoiser, NoiseSource } from "../../core/types.ts";
import type { ModelFn } from "../../strategies/strategy.ts";
import {
  compare,
  floats,
  GoldenError,
  guard,
  loadManifest,
  nchwToNhwc,
  nhwcToNchw,
  type Row,
  type SectionChecker,
  SectionContext,
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

export const KDIFFUSION_FIXTURE = join(REPO_ROOT, "test", "fixtures", "golden-kdiffusion");

interface Case {
  key: string;
  sampler: string;
  schedule: ScheduleName;
  guidance: "cond" | "cfg";
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

function denoiserFor(model: ModelFn, tokens: Tensor2D, mask: Tensor2D, c: Case, scale: number): Denoiser {
  const row = (t: Tensor2D, i: number) => tf.slice(t, [i, 0], [1, -1]) as Tensor2D;
  if (c.guidance === "cond")
    return (x, step) =>
      model(x, timesteps(x.shape[0], step.t), { tokens: row(tokens, 0), mask: row(mask, 0) });
  return (x, step) =>
    tf.tidy(() => {
      // [cond; uncond] on the same x, eps_u + s·(eps_c − eps_u) (GLIDE's text2im notebook)
      const out = model(tf.concat([x, x]) as Tensor4D, timesteps(2 * x.shape[0], step.t), { tokens, mask });
      const b = x.shape[0];
      const [cond, uncond] = tf.split(out.out, [b, b]) as [Tensor4D, Tensor4D];
      return { out: tf.add(uncond, tf.mul(tf.sub(cond, uncond), scale)) as Tensor4D, kind: "eps" as const };
    });
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
  const list = fx.meta<Case[]>("kdiffusion", "cases");
  const steps = Number(fx.meta("kdiffusion", "steps"));
  const scale = Number(fx.meta("kdiffusion", "cfg_scale"));
  const spread =
    (fx.manifest?.meta?.kdiffusion as { spread?: Record<string, number> } | undefined)?.spread ?? {};
  return withGoldenModels(ctx, [goldenGlide], ([unet]) => {
    const diffusion = createDiffusion({
      schedule: scheduleAlias(ctx.meta<string>("small_glide", "noise_schedule")),
      steps: Number(ctx.meta("small_glide", "diffusion_steps")),
      modelVarType: "learned_range",
    });
    const xT = fx.load("x_T.npy");
    const noiseArr = fx.load("noise_per_step.npy");
    return list.flatMap((c) =>
      guard(s, c.key, () => {
        const { value, seconds, runtime } = withDenoiser(ctx, unet, (model) =>
          scoped(() => {
            const tokens = intTensor(fx, "tokens.npy") as Tensor2D;
            const mask = maskTensor(fx, "mask.npy");
            const per = noiseArr.shape.slice(1);
            const all = floats(noiseArr, "noise_per_step.npy", 5);
            const size = per.reduce((a, b) => a * b, 1);
            const noise: NoiseSource = (k) => {
              if (k >= noiseArr.shape[0]!)
                throw new GoldenError(`noise_per_step.npy: no noise for step ${k}`);
              return nchwToNhwc(all.subarray(k * size, (k + 1) * size), per);
            };
            const x0 = nchwToNhwc(floats(xT, "x_T.npy", 4), xT.shape);
            const r = sample(diffusion, denoiserFor(model, tokens, mask, c, scale), x0, {
              sampler: c.sampler,
              steps,
              schedule: c.schedule,
              noise,
              clipDenoised: true,
            });
            return nhwcToNchw(r.sample);
          }),
        );
        const tol = Math.max(TOL_TRAJECTORY, spread[c.key] ?? 0);
        return compare(
          s,
          `${c.sampler} ${c.schedule} σs, ${c.guidance === "cfg" ? `cfg s=${scale}` : "conditional"}, ${steps} steps`,
          floats(fx.load(`${c.key}.npy`), `${c.key}.npy`),
          value,
          tol,
          `${seconds.toFixed(1)} s, ${runtime}${tol > TOL_TRAJECTORY ? " (tol = the reference's thread spread)" : ""}`,
        );
      }),
    );
  });
}

export const kdiffusion: SectionChecker = { name: "kdiffusion", fixture: KDIFFUSION_FIXTURE, run };
