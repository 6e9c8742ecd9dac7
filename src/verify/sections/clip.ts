// The diffusion side of CLIP guidance: condition_mean applied to the recorded p_mean_variance and gradient. The
// CLIP encoders and the gradient itself are checked once the CLIP model is ported.
import { GaussianDiffusion, type PMeanVariance } from "../../core/diffusion.ts";
import { tf } from "../../core/engine.ts";
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

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  const rows: Row[] = [];
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
