// guided-diffusion's classifier-guided loop: its diffusion tables (cosine schedule, respacing from the manifest),
// then the whole DDPM trajectory with the golden class-conditional UNet and noised classifier through the
// strategies registry's `classifier` strategy (condition_mean with meta.classifier_scale), replaying the recorded
// noise. The class labels are not stored with the loop: they are the other guided-diffusion sections' (gd_guided/y.npy
// when present, else gd_classifier/in_y.npy, else gd_unet/fwd_in_y.npy).
import { tf } from "../../core/engine.ts";
import { GoldenError, guard, type Row, type SectionChecker, type SectionContext } from "../common.ts";
import {
  goldenClassifier,
  goldenGdUnet,
  sibling,
  withClassifierGuide,
  withGoldenModels,
} from "../golden-models.ts";
import { guidedTrajectoryRow } from "../guided.ts";
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
  return withGoldenModels(ctx, [goldenGdUnet, goldenClassifier], ([unet, classifier]) =>
    guard(s, "trajectory", () => {
      const scale = Number(ctx.meta("classifier_scale"));
      const { y, from } = labels(ctx);
      const diffusion = diffusionFromMeta(ctx, "small_gd_model");
      // Prompts are the labels themselves: the bag's encoder and classifierLabel read them back.
      const prompts = y.map(String);
      return withClassifierGuide(ctx, classifier, (guide) =>
        guidedTrajectoryRow(
          ctx,
          diffusion,
          unet,
          {
            encode: (ps) => ({ y: tf.tensor1d(ps.map(Number), "int32") }),
            classifier: guide,
            classifierLabel: Number,
          },
          { kind: "classifier", scale, base: { kind: "none" } },
          prompts,
          `trajectory samples (classifier scale ${scale}, ${diffusion.numTimesteps} steps)`,
          `; y = [${y}] from ${from}`,
        ),
      );
    }),
  );
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
