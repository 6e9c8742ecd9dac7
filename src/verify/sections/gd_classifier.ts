// guided-diffusion's noised classifier with the golden weights: the logits, and the classifier-guidance gradient
// d/dx Σ log_softmax(logits)[y]·scale (scale from manifest meta.classifier_scale).
import type { Tensor1D } from "../../core/engine.ts";
import { tf } from "../../core/engine.ts";
import {
  compare,
  floats,
  guard,
  nchwToNhwc,
  nhwcToNchw,
  type Row,
  type SectionChecker,
  type SectionContext,
  TOL_SINGLE,
} from "../common.ts";
import {
  goldenClassifier,
  intTensor,
  timed,
  withClassifierGuide,
  withGoldenModel,
} from "../golden-models.ts";

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  return withGoldenModel(ctx, "classifier", goldenClassifier, (classifier) => {
    const rows: Row[] = [];
    const inputs = () => {
      const xIn = ctx.load("in_x.npy");
      return {
        x: nchwToNhwc(floats(xIn, "in_x.npy", 4), xIn.shape),
        t: intTensor(ctx, "in_t.npy") as Tensor1D,
        y: intTensor(ctx, "in_y.npy") as Tensor1D,
      };
    };
    rows.push(
      ...guard(s, "logits", () => {
        const { value, seconds } = timed(() =>
          tf.tidy(() => {
            const { x, t } = inputs();
            return classifier.logits(x, t).dataSync() as Float32Array;
          }),
        );
        const ref = floats(ctx.load("logits.npy"), "logits.npy");
        return compare(s, "logits", ref, value, TOL_SINGLE, `${seconds.toFixed(1)} s`);
      }),
    );
    rows.push(
      ...guard(s, "cond_grad", () => {
        const scale = Number(ctx.meta("classifier_scale"));
        const { value, seconds } = timed(() =>
          withClassifierGuide(ctx, classifier, (guide) =>
            tf.tidy(() => {
              const { x, t, y } = inputs();
              return nhwcToNchw(guide.condGrad(x, t, y, scale));
            }),
          ),
        );
        const ref = floats(ctx.load("cond_grad.npy"), "cond_grad.npy");
        return compare(
          s,
          `cond_grad (scale ${scale})`,
          ref,
          value,
          TOL_SINGLE,
          `${seconds.toFixed(1)} s, ${ctx.runtime}`,
        );
      }),
    );
    return rows;
  });
}

export const gdClassifier: SectionChecker = { name: "gd_classifier", run };
