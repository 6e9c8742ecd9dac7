// One forward of GLIDE's Text2ImUNet with the golden weights: the text encoder's outputs, the time embedding, every
// input/middle/output block's activation (one row each, so a mismatch points at its block) and the output.
import type { Tensor1D, Tensor2D, Tensor4D } from "../../core/engine.ts";
import { tf } from "../../core/engine.ts";
import { silu, timestepEmbedding } from "../../core/layers.ts";
import type { UNet } from "../../nets/unet.ts";
import {
  compare,
  failRow,
  floats,
  guard,
  nchwToNhwc,
  nhwcToNchw,
  type Row,
  type SectionChecker,
  type SectionContext,
  skipRow,
  TOL_SINGLE,
} from "../common.ts";
import {
  goldenGlide,
  intTensor,
  maskTensor,
  timed,
  withDenoiser,
  withGoldenModel,
} from "../golden-models.ts";

function run(ctx: SectionContext): Row[] {
  const s = ctx.section;
  return withGoldenModel(ctx, "glide", goldenGlide, (unet) => {
    const rows: Row[] = [];
    rows.push(
      ...guard(s, "forward", () => {
        const out: Row[] = [];
        const xIn = ctx.load("in_x.npy");
        const refOf = (name: string) => floats(ctx.load(name), name);
        const expected = new Set(
          ctx
            .list()
            .filter((f) => /^act_.+\.npy$/.test(f) && f !== "act_time_embed.npy")
            .map((f) => f.slice(4, -4)),
        );
        const { seconds } = timed(() =>
          tf.tidy(() => {
            const x = nchwToNhwc(floats(xIn, "in_x.npy", 4), xIn.shape);
            const t = intTensor(ctx, "in_t.npy") as Tensor1D;
            const tokens = intTensor(ctx, "in_tokens.npy") as Tensor2D;
            const mask = maskTensor(ctx, "in_mask.npy");
            if (!unet.text) throw new Error("the small_glide config has no text encoder (xf_width 0)");
            const text = unet.text.encode(tokens, mask);
            // Everything between the inputs and out.npy is an intermediate: compared when the set holds it.
            const optional = (file: string, row: () => Row) =>
              out.push(ctx.has(file) ? row() : skipRow(s, file.replace(/\.npy$/, ""), file));
            optional("text_xf_proj.npy", () =>
              compare(s, "text_xf_proj", refOf("text_xf_proj.npy"), text.xfProj.dataSync(), TOL_SINGLE),
            );
            optional("text_xf_out_NCL.npy", () =>
              compare(
                s,
                "text_xf_out_NCL",
                refOf("text_xf_out_NCL.npy"),
                tf.transpose(text.xfOut, [0, 2, 1]).dataSync(),
                TOL_SINGLE,
              ),
            );
            const mc = unet.config.modelChannels;
            const raw = timestepEmbedding(t, mc);
            if (ctx.has("timestep_embedding_raw.npy")) {
              out.push(
                compare(
                  s,
                  "timestep_embedding_raw",
                  refOf("timestep_embedding_raw.npy"),
                  raw.dataSync(),
                  TOL_SINGLE,
                ),
              );
            }
            const temb = unet.timeEmbed2.forward(silu(unet.timeEmbed0.forward(raw)));
            optional("act_time_embed.npy", () =>
              compare(s, "act_time_embed", refOf("act_time_embed.npy"), temb.dataSync(), TOL_SINGLE),
            );
            const cond = unet.embed(t, { tokens, mask });
            const absent: string[] = [];
            const y = unet.forwardWith(x, cond, (name, h: Tensor4D) => {
              const file = `act_${name}.npy`;
              if (!expected.delete(name)) {
                absent.push(file);
                return;
              }
              out.push(compare(s, `act_${name}`, refOf(file), nhwcToNchw(h), TOL_SINGLE));
            });
            if (absent.length)
              out.push(
                skipRow(
                  s,
                  "block activations",
                  `${absent.length} of the port's blocks: ${absent.length > 3 ? `${absent.slice(0, 3).join(", ")}, …` : absent.join(", ")}`,
                ),
              );
            out.push(compare(s, "out", refOf("out.npy"), nhwcToNchw(y), TOL_SINGLE));
          }),
        );
        for (const name of expected) {
          out.push(
            failRow(s, `act_${name}`, `${ctx.rel(`act_${name}.npy`)}: no block of the port has this name`),
          );
        }
        const final = out.find((r) => r.case === "out");
        if (final && final.note === undefined) {
          final.note = `${seconds.toFixed(1)} s for the text encoder and one forward`;
        }
        return out;
      }),
    );
    // The block activations above are TensorFlow.js's; with another runtime selected, its whole forward is
    // checked too (an ONNX graph has no per-block outputs to compare).
    if (ctx.runtime !== "tfjs") rows.push(...runtimeRow(ctx, unet));
    return rows;
  });
}

function runtimeRow(ctx: SectionContext, unet: UNet): Row[] {
  const s = ctx.section;
  return guard(s, `out (${ctx.runtime})`, () => {
    const xIn = ctx.load("in_x.npy");
    const { value, seconds, runtime } = withDenoiser(ctx, unet, (model) =>
      tf.tidy(() => {
        const x = nchwToNhwc(floats(xIn, "in_x.npy", 4), xIn.shape);
        const t = intTensor(ctx, "in_t.npy") as Tensor1D;
        const tokens = intTensor(ctx, "in_tokens.npy") as Tensor2D;
        const mask = maskTensor(ctx, "in_mask.npy");
        const p = model(x, t, { tokens, mask });
        return nhwcToNchw(p.varValues ? tf.concat([p.out, p.varValues], 3) : p.out);
      }),
    );
    const ref = floats(ctx.load("out.npy"), "out.npy");
    return compare(s, `out (${runtime})`, ref, value, TOL_SINGLE, `${seconds.toFixed(1)} s`);
  });
}

export const glideFwd: SectionChecker = { name: "glide_fwd", run };
