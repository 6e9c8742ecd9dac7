// GLIDE's DDIM loop: the respacing, then the whole trajectory with the golden GLIDE model (tokens and mask from the
// golden arrays, eta from the manifest, no guidance). x_T.npy is the loop's initial x: the upsampler notebook's
// temperature (meta.glide_ddim.temp) was applied before it was stored, so scaling it again would be wrong.
import { createDiffusion, spaceTimesteps } from "../../core/diffusion.ts";
import type { Tensor1D, Tensor2D } from "../../core/engine.ts";
import { tf } from "../../core/engine.ts";
import { sampleDdim } from "../../core/samplers.ts";
import type { Denoiser } from "../../core/types.ts";
import {
  compare,
  floats,
  GoldenError,
  guard,
  nchwToNhwc,
  nhwcToNchw,
  type Row,
  type SectionChecker,
  type SectionContext,
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

function timestepRows(ctx: SectionContext): Row[] {
  const s = ctx.section;
  return guard(s, "timestep_map", () => {
    const spec = String(ctx.meta("glide_ddim", "respacing"));
    const T = Number(ctx.meta("small_glide", "diffusion_steps"));
    const got = spaceTimesteps(T, spec);
    const rows = [compare(s, `timestep_map "${spec}" (T=${T})`, ctx.loadNumbers("timestep_map.npy"), got, 0)];
    const listed = ctx.manifest?.meta?.glide_ddim as { timestep_map?: number[] } | undefined;
    if (listed?.timestep_map)
      rows.push(compare(s, "manifest meta.glide_ddim.timestep_map", listed.timestep_map, got, 0));
    return rows;
  });
}

function trajectoryRows(ctx: SectionContext): Row[] {
  const s = ctx.section;
  return withGoldenModels(ctx, [goldenGlide], ([unet]) =>
    guard(s, "trajectory", () => {
      const spec = String(ctx.meta("glide_ddim", "respacing"));
      const eta = Number(ctx.meta("glide_ddim", "eta"));
      if (eta !== 0) {
        throw new GoldenError(
          `manifest.json: meta.glide_ddim.eta is ${eta}, but no per-step noise is stored`,
        );
      }
      const diffusion = createDiffusion({
        schedule: scheduleAlias(ctx.meta<string>("small_glide", "noise_schedule")),
        steps: Number(ctx.meta("small_glide", "diffusion_steps")),
        respacing: spec,
        modelVarType: "learned_range",
      });
      const xT = ctx.load("x_T.npy");
      const { value, seconds, runtime } = withDenoiser(ctx, unet, (model) =>
        scoped(() => {
          const tokens = intTensor(ctx, "tokens.npy") as Tensor2D;
          const mask = maskTensor(ctx, "mask.npy");
          const denoise: Denoiser = (x, step) => {
            const t = tf.fill([x.shape[0]], step.t, "int32") as Tensor1D;
            return model(x, t, { tokens, mask });
          };
          const x0 = nchwToNhwc(floats(xT, "x_T.npy", 4), xT.shape);
          return nhwcToNchw(sampleDdim(diffusion, denoise, x0, { eta, clipDenoised: true }));
        }),
      );
      return ctx.trajectoryRow((tol) =>
        compare(
          s,
          `trajectory samples ("${spec}", eta ${eta}, ${diffusion.numTimesteps} steps)`,
          floats(ctx.load("samples.npy"), "samples.npy"),
          value,
          tol,
          `${seconds.toFixed(1)} s, ${runtime}`,
        ),
      );
    }),
  );
}

function run(ctx: SectionContext): Row[] {
  return [...timestepRows(ctx), ...trajectoryRows(ctx)];
}

export const glideDdim: SectionChecker = { name: "glide_ddim", run };
