// GLIDE's CLIP-guided loop (the clip_guided notebook): the conditional GLIDE model (no classifier-free guidance) and
// the noised CLIP's gradient on the mean (meta.clip_guidance_scale), through the strategies registry's `clip`
// strategy, replaying the recorded noise. GLIDE's tokens and mask are the loop's own arrays; CLIP's tokens are the
// clip section's (clip/text_tokens.npy, text_lens.npy), which encode the same prompts (meta.prompts).
import type { Tensor2D } from "../../core/engine.ts";
import { tf } from "../../core/engine.ts";
import { GoldenError, guard, type Row, type SectionChecker, type SectionContext } from "../common.ts";
import {
  goldenClip,
  goldenGlide,
  intTensor,
  maskTensor,
  sibling,
  withClipGuide,
  withGoldenModels,
} from "../golden-models.ts";
import { guidedTrajectoryRow } from "../guided.ts";
import { diffusionFromMeta } from "../tables.ts";

/** Row of each prompt in the golden arrays: its index in meta.prompts. */
export function promptRows(prompts: readonly string[], listed: readonly string[]): number[] {
  return prompts.map((p) => {
    const i = listed.indexOf(p);
    if (i < 0) throw new GoldenError(`manifest.json: prompt ${JSON.stringify(p)} is not in meta.prompts`);
    return i;
  });
}

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  return withGoldenModels(ctx, [goldenGlide, goldenClip], ([unet, clipModel]) =>
    guard(s, "trajectory", () => {
      const scale = Number(ctx.meta("clip_guidance_scale"));
      const listed = ctx.meta<string[]>("prompts");
      const batch = ctx.load("x_T.npy").shape[0]!;
      const prompts = listed.slice(0, batch);
      if (prompts.length !== batch) {
        throw new GoldenError(`manifest.json: ${listed.length} prompts for a batch of ${batch}`);
      }
      const clipCtx = sibling(ctx, "clip");
      const clipLens = clipCtx.loadNumbers("text_lens.npy");
      const diffusion = diffusionFromMeta(ctx, "small_glide");
      return withClipGuide(ctx, clipModel, (guide) =>
        guidedTrajectoryRow(
          ctx,
          diffusion,
          unet,
          {
            encode: (ps) =>
              tf.tidy(() => {
                const rowsOf = promptRows(ps, listed);
                const all = {
                  tokens: intTensor(ctx, "tokens.npy") as Tensor2D,
                  mask: maskTensor(ctx, "mask.npy"),
                };
                const idx = tf.tensor1d(rowsOf, "int32");
                return {
                  tokens: tf.gather(all.tokens, idx) as Tensor2D,
                  mask: tf.gather(all.mask, idx) as Tensor2D,
                };
              }),
            clip: guide,
            clipText: (ps) =>
              tf.tidy(() => {
                const rowsOf = promptRows(ps, listed);
                const tokens = tf.gather(intTensor(clipCtx, "text_tokens.npy"), tf.tensor1d(rowsOf, "int32"));
                return clipModel.embedText(
                  tokens as Tensor2D,
                  rowsOf.map((r) => clipLens[r]!),
                );
              }),
          },
          { kind: "clip", scale, base: { kind: "none" } },
          prompts,
          `trajectory samples (CLIP scale ${scale}, ${diffusion.numTimesteps} steps)`,
        ),
      );
    }),
  );
}

export const clipGuided: SectionChecker = { name: "clip_guided", run };
