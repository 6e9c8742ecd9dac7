// One forward of guided-diffusion's class-conditional UNet (learned sigma) with the golden weights.
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
import { goldenGdUnet, intTensor, withDenoiser, withGoldenModel } from "../golden-models.ts";

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  return withGoldenModel(ctx, "gdUnet", goldenGdUnet, (unet) => {
    const rows: Row[] = [];
    rows.push(
      ...guard(s, "fwd_out", () => {
        const xIn = ctx.load("fwd_in_x.npy");
        const { value, seconds, runtime } = withDenoiser(ctx, unet, (model) =>
          tf.tidy(() => {
            const x = nchwToNhwc(floats(xIn, "fwd_in_x.npy", 4), xIn.shape);
            const t = intTensor(ctx, "fwd_in_t.npy") as Tensor1D;
            const y = ctx.has("fwd_in_y.npy") ? (intTensor(ctx, "fwd_in_y.npy") as Tensor1D) : undefined;
            const p = model(x, t, y ? { y } : {});
            return nhwcToNchw(p.varValues ? tf.concat([p.out, p.varValues], 3) : p.out);
          }),
        );
        const ref = floats(ctx.load("fwd_out.npy"), "fwd_out.npy");
        return compare(s, "fwd_out", ref, value, TOL_SINGLE, `${seconds.toFixed(1)} s, ${runtime}`);
      }),
    );
    return rows;
  });
}

export const gdUnet: SectionChecker = { name: "gd_unet", run };
