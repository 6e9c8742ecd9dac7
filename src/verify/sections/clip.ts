// GLIDE's noised CLIP with the golden weights: text and image features (raw and normalised), the loss, the
// CLIP-guidance gradient (scale from manifest meta.clip_guidance_scale) and the padded attention masks; then the
// diffusion side, condition_mean applied to the recorded p_mean_variance and gradient.
import { GaussianDiffusion, type PMeanVariance } from "../../core/diffusion.ts";
import type { Tensor1D, Tensor2D } from "../../core/engine.ts";
import { tf } from "../../core/engine.ts";
import { clipAttentionBias } from "../../nets/clip.ts";
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
  TOL_SINGLE,
} from "../common.ts";
import { goldenClip, intTensor, scoped, timed, withClipGuide, withGoldenModel } from "../golden-models.ts";

function modelRows(ctx: SectionContext): Row[] {
  const s = ctx.section;
  return withGoldenModel(ctx, "clip", goldenClip, (clipModel) => {
    const rows: Row[] = [];
    const ref = (name: string) => floats(ctx.load(name), name);
    rows.push(
      ...guard(s, "attention biases", () => {
        const c = clipModel.config;
        return [
          compare(
            s,
            "text_attn_bias (causal)",
            ref("text_attn_bias.npy"),
            clipAttentionBias(c.maxTextLen, true),
            0,
          ),
          compare(
            s,
            "image_attn_bias (dense)",
            ref("image_attn_bias.npy"),
            clipAttentionBias(1 + (c.imageSize / c.patchSize) ** 2, false),
            0,
          ),
        ];
      }),
    );
    const textIn = () => ({
      tokens: intTensor(ctx, "text_tokens.npy") as Tensor2D,
      lens: ctx.loadNumbers("text_lens.npy"),
    });
    const imageIn = () => {
      const xIn = ctx.load("cond_in_x.npy");
      return {
        x: nchwToNhwc(floats(xIn, "cond_in_x.npy", 4), xIn.shape),
        t: intTensor(ctx, "cond_in_t_original.npy") as Tensor1D,
      };
    };
    rows.push(
      ...guard(s, "text features", () =>
        scoped(() => {
          const { tokens, lens } = textIn();
          return [
            compare(
              s,
              "z_t_raw",
              ref("z_t_raw.npy"),
              clipModel.encodeText(tokens, lens).dataSync(),
              TOL_SINGLE,
            ),
            compare(s, "z_t", ref("z_t.npy"), clipModel.embedText(tokens, lens).dataSync(), TOL_SINGLE),
          ];
        }),
      ),
    );
    rows.push(
      ...guard(s, "image features", () =>
        scoped(() => {
          const { x, t } = imageIn();
          return [
            compare(s, "z_i_raw", ref("z_i_raw.npy"), clipModel.encodeImage(x, t).dataSync(), TOL_SINGLE),
            compare(s, "z_i", ref("z_i.npy"), clipModel.embedImage(x, t).dataSync(), TOL_SINGLE),
          ];
        }),
      ),
    );
    rows.push(
      ...guard(s, "loss and cond_grad", () => {
        const scale = Number(ctx.meta("clip_guidance_scale"));
        const { value, seconds } = timed(() =>
          scoped(() => {
            const { tokens, lens } = textIn();
            const { x, t } = imageIn();
            const zt = clipModel.embedText(tokens, lens);
            const loss = tf.mul(
              tf.exp(tf.reshape(clipModel.logitScale, [])),
              tf.sum(tf.mul(zt, clipModel.embedImage(x, t))),
            );
            return {
              loss: loss.dataSync() as Float32Array,
              grad: withClipGuide(ctx, clipModel, (guide) => nhwcToNchw(guide.condGrad(x, t, zt, scale))),
            };
          }),
        );
        return [
          compare(s, "loss exp(logit_scale)·Σ z_t·z_i", ref("loss.npy"), value.loss, TOL_SINGLE),
          compare(
            s,
            `cond_grad (scale ${scale})`,
            ref("cond_grad.npy"),
            value.grad,
            TOL_SINGLE,
            `${seconds.toFixed(1)} s, ${ctx.runtime}`,
          ),
        ];
      }),
    );
    return rows;
  });
}

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  const rows: Row[] = modelRows(ctx);
  rows.push(
    ...guard(s, "conditionMean", () => {
      const mean = ctx.load("pmv_mean.npy");
      const variance = ctx.load("pmv_variance.npy");
      const grad = ctx.load("cond_grad.npy");
      const ref = ctx.load("conditioned_mean.npy");
      for (const [name, a] of [
        ["pmv_variance", variance],
        ["cond_grad", grad],
        ["conditioned_mean", ref],
      ] as const) {
        if (JSON.stringify(a.shape) !== JSON.stringify(mean.shape)) {
          throw new GoldenError(
            `${s}/${name}.npy: shape [${a.shape}] differs from pmv_mean's [${mean.shape}]`,
          );
        }
      }
      const tResp = ctx.has("cond_in_t_respaced.npy") ? ctx.loadNumbers("cond_in_t_respaced.npy") : [0];
      const tOrig = ctx.has("cond_in_t_original.npy") ? ctx.loadNumbers("cond_in_t_original.npy") : tResp;
      const step = { index: tResp[0] ?? 0, t: tOrig[0] ?? 0, k: 0 };
      // condition_mean reads no table, so any diffusion instance serves.
      const d = new GaussianDiffusion(Float64Array.of(0.5));
      const got = tf.tidy(() => {
        const m = nchwToNhwc(floats(mean, "pmv_mean.npy", 4), mean.shape);
        const v = nchwToNhwc(floats(variance, "pmv_variance.npy"), variance.shape);
        const g = nchwToNhwc(floats(grad, "cond_grad.npy"), grad.shape);
        const pmv: PMeanVariance = { mean: m, variance: v, logVariance: tf.log(v), predXstart: m, eps: m };
        return nhwcToNchw(d.conditionMean(pmv, m, step, () => g).mean);
      });
      return compare(
        s,
        "conditionMean → conditioned_mean",
        floats(ref, "conditioned_mean.npy"),
        got,
        TOL_SINGLE,
      );
    }),
  );
  rows.push(
    ...guard(s, "log variance", () => {
      const variance = ctx.load("pmv_variance.npy");
      const logVar = ctx.load("pmv_log_variance.npy");
      const got = tf.tidy(
        () => tf.log(tf.tensor(floats(variance, "pmv_variance.npy"))).dataSync() as Float32Array,
      );
      return compare(
        s,
        "pmv_log_variance vs log(pmv_variance)",
        floats(logVar, "pmv_log_variance.npy"),
        got,
        TOL_SINGLE,
      );
    }),
  );
  return rows;
}

export const clip: SectionChecker = { name: "clip", run };
