// Sampling loops driven by the strategies registry (the code path experiments use) on the golden models, with the
// recorded per-step noise replayed. A section supplies the model bag and the strategy config; this runs the loop.
import type { GaussianDiffusion } from "../core/diffusion.ts";
import type { Tensor4D } from "../core/engine.ts";
import type { NpyArray } from "../core/npy.ts";
import { sampleDdpm } from "../core/samplers.ts";
import type { UNet } from "../nets/unet.ts";
import { buildStrategy } from "../strategies/registry.ts";
import { type GuidanceModels, hooksOf, type ModelFn } from "../strategies/strategy.ts";
import {
  compare,
  floats,
  GoldenError,
  nchwToNhwc,
  nhwcToNchw,
  type Row,
  type SectionContext,
  stepSlice,
} from "./common.ts";
import { scoped, withDenoiser } from "./golden-models.ts";

/** Checks that x_T and the stored noise fit a loop of the diffusion's length and x_T's batch. */
export function checkLoopArrays(ctx: SectionContext, xT: NpyArray, noise: NpyArray, steps: number): void {
  if (xT.shape.length !== 4)
    throw new GoldenError(`${ctx.rel("x_T.npy")}: expected [B, C, H, W], got [${xT.shape}]`);
  if (noise.shape.length !== 5 || noise.shape[0] !== steps) {
    throw new GoldenError(
      `${ctx.rel("noise_per_step.npy")}: shape [${noise.shape}], expected [${steps}, ${xT.shape.join(", ")}] for ${steps} steps`,
    );
  }
  if (JSON.stringify(noise.shape.slice(1)) !== JSON.stringify(xT.shape)) {
    throw new GoldenError(
      `${ctx.rel("noise_per_step.npy")}: per-step shape [${noise.shape.slice(1)}] ≠ x_T's [${xT.shape}]`,
    );
  }
}

/**
 * DDPM from x_T with the strategy `config` built on `models`, bound to `prompts`, replaying noise_per_step.npy.
 * Returns the samples in NCHW order.
 */
export function guidedDdpm(
  ctx: SectionContext,
  diffusion: GaussianDiffusion,
  models: GuidanceModels,
  config: { kind: string } & Record<string, unknown>,
  prompts: readonly string[],
): Float32Array {
  const xT = ctx.load("x_T.npy");
  const noise = ctx.load("noise_per_step.npy");
  checkLoopArrays(ctx, xT, noise, diffusion.numTimesteps);
  const strategy = buildStrategy(config, models, `${ctx.section} strategy`);
  const binding = strategy.bind(prompts);
  try {
    return scoped(() => {
      const x0 = nchwToNhwc(floats(xT, "x_T.npy", 4), xT.shape);
      const out = sampleDdpm(diffusion, binding.denoise, x0, {
        ...hooksOf(binding),
        noise: (k): Tensor4D => stepSlice(noise, "noise_per_step.npy", k),
        clipDenoised: binding.clipDenoised ?? true,
      });
      return nhwcToNchw(out);
    });
  } finally {
    binding.dispose();
  }
}

/**
 * guidedDdpm with the golden `unet` as the bag's model (on the section's runtime; gradient guides in `guides` run
 * where the caller put them: withClassifierGuide / withClipGuide follow the section's runtime), timed, as one row against samples.npy; `note` follows the time and runtime.
 */
export function guidedTrajectoryRow(
  ctx: SectionContext,
  diffusion: GaussianDiffusion,
  unet: UNet,
  guides: Omit<GuidanceModels, "model">,
  config: { kind: string } & Record<string, unknown>,
  prompts: readonly string[],
  label: string,
  note = "",
): Row {
  const { value, seconds, runtime } = withDenoiser(ctx, unet, (model: ModelFn) =>
    guidedDdpm(ctx, diffusion, { model, ...guides }, config, prompts),
  );
  return ctx.trajectoryRow((tol) =>
    compare(
      ctx.section,
      label,
      floats(ctx.load("samples.npy"), "samples.npy"),
      value,
      tol,
      `${seconds.toFixed(1)} s, ${runtime}${note}`,
    ),
  );
}
