// guided-diffusion's classifier-guided loop: its diffusion tables (cosine schedule, respacing from the manifest),
// then the whole DDPM trajectory with the golden class-conditional UNet and noised classifier through the
// strategies registry's `classifier` strategy (condition_mean with meta.classifier_scale), replaying the recorded
// noise. The class labels are not stored with the loop: they are the other guided-diffusion sections' (gd_guided/y.npy
// when present, else gd_classifier/in_y.npy, else gd_unet/fwd_in_y.npy).
import "../../core/ops.ts";
import { tf } from "../../core/engine.ts";
import type { EncoderUNet } from "../../models/encoder-unet.ts";
import type { UNet } from "../../models/unet.ts";
import {
  compare,
  floats,
  GoldenError,
  guard,
  type Row,
  type SectionChecker,
  type SectionContext,
  TOL_TRAJECTORY,
} from "../common.ts";
import { goldenClassifier, goldenDenoiser, goldenGdUnet, sibling, timed } from "../golden-models.ts";
import { guidedDdpm } from "../guided.ts";
import { checkTables, diffusionFromMeta } from "../tables.ts";

function labels(ctx: SectionContext): { y: number[]; from: string } {
  const sources: [SectionContext, string][] = [
    [ctx, "y.npy"],
    [sibling(ctx, "gd_classifier"), "in_y.npy"],
    [sibling(ctx, "gd_unet"), "fwd_in_y.npy"],
  ];
  for (const [c, name] of sources) if (c.has(name)) return { y: c.loadNumbers(name), from: c.rel(name) };
  throw new GoldenError(
    `${ctx.section}: no class labels (y.npy, gd_classifier/in_y.npy or gd_unet/fwd_in_y.npy)`,
  );
}

function trajectory(ctx: SectionContext): Row[] {
  const s = ctx.section;
  let unet: UNet | undefined;
  let classifier: EncoderUNet | undefined;
  const rows = guard(s, "weights", () => {
    unet = goldenGdUnet(ctx);
    classifier = goldenClassifier(ctx);
    return [];
  });
  try {
    if (!unet || !classifier) return rows;
    const model = unet;
    const clf = classifier;
    rows.push(
      ...guard(s, "trajectory", () => {
        const scale = Number(ctx.meta("classifier_scale"));
        const { y, from } = labels(ctx);
        const diffusion = diffusionFromMeta(ctx, "small_gd_model");
        // Prompts are the labels themselves: the bag's encoder and classifierLabel read them back.
        const prompts = y.map(String);
        // The classifier's gradient stays on TensorFlow.js whatever the denoiser's runtime.
        const denoiser = goldenDenoiser(ctx, model);
        const { value, seconds } = timed(() => {
          try {
            return guidedDdpm(
              ctx,
              diffusion,
              {
                model: denoiser.model,
                encode: (ps) => ({ y: tf.tensor1d(ps.map(Number), "int32") }),
                classifier: clf,
                classifierLabel: Number,
              },
              { kind: "classifier", scale, base: { kind: "none" } },
              prompts,
            );
          } finally {
            denoiser.dispose();
          }
        });
        return compare(
          s,
          `trajectory samples (classifier scale ${scale}, ${diffusion.numTimesteps} steps)`,
          floats(ctx.load("samples.npy"), "samples.npy"),
          value,
          TOL_TRAJECTORY,
          `${seconds.toFixed(1)} s, ${denoiser.runtime}; y = [${y}] from ${from}`,
        );
      }),
    );
    return rows;
  } finally {
    unet?.dispose();
    classifier?.dispose();
  }
}

function run(ctx: SectionContext): Row[] {
  return [
    ...guard(ctx.section, "diffusion", () =>
      checkTables(ctx, "diffusion", diffusionFromMeta(ctx, "small_gd_model"), "diffusion"),
    ),
    ...trajectory(ctx),
  ];
}

export const gdGuided: SectionChecker = { name: "gd_guided", run };
