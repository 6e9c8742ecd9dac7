// The denoiser as a function gradients flow through, for strategies that differentiate a loss of its output with
// respect to x_t (clean-clip's backprop: Crowson 2021, k-diffusion's sample_clip_guided.py). Left to TensorFlow.js's
// tape, the UNet's activations for the whole batch stay alive until the backward pass: on wasm (a 32-bit heap) that
// aborts past about 20 rows of the zoo UNet (51 rows did, in the guide-strength sweep).
//
// Here the forward runs where the sampler's does (ONNX Runtime, or TensorFlow.js) and the backward is the
// vector–Jacobian product ∇ₓ⟨dy, f(x, t, c)⟩, recomputed in chunks of rows: the UNet treats rows independently
// (GroupNorm, attention and the text encoder are per sample), so the chunks' products are the batch's. On ONNX
// Runtime each chunk shape is one traced graph (traced.ts: TensorFlow.js differentiates the UNet once per shape and
// ONNX Runtime replays forward and backward on all cores); on TensorFlow.js each chunk has its own tape. Either way
// the backward costs one more forward than the tape would (the recomputation), and NFE counts neither.
import type { Tensor, Tensor1D, Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import { withNestedTape } from "../core/ops.ts";
import type { ModelFn } from "../nets/denoiser.ts";
import { splitPrediction } from "../nets/denoiser.ts";
import type { Conditioning, UNet } from "../nets/unet.ts";
import type { Runtime } from "./choice.ts";
import { OnnxTraced, type TensorFn } from "./traced.ts";

/**
 * Rows per backward chunk: 16 rows of the zoo UNet's forward and backward fit the wasm heap with room to spare
 * (17 rows peaked at 2.0 GB resident), and a batch is cut into equal chunks so that one traced shape serves it.
 */
export const VJP_CHUNK = 16;

const COND_KEYS = ["tokens", "mask", "y", "lowRes", "inpaintImage", "inpaintMask"] as const;

/** The conditioning's tensors by name (absent fields left out), so they can be graph inputs. */
function condInputs(cond: Conditioning): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const k of COND_KEYS) if (cond[k]) out[k] = cond[k];
  return out;
}

/** ∇ₓ⟨dy, unet(x, t, cond)⟩ as a function of named tensors (x, t, dy and the conditioning's). */
function vjpFn(unet: UNet): TensorFn {
  return ({ x, t, dy, ...c }) =>
    tf.grad((xv) => tf.sum(tf.mul(unet.forward(xv as Tensor4D, t as Tensor1D, c as Conditioning), dy!)))(x!);
}

/** Rows [start, start + n) of every input, padded to `size` rows by repeating the first (their results are cut). */
function chunkOf(
  inputs: Record<string, Tensor>,
  start: number,
  n: number,
  size: number,
): Record<string, Tensor> {
  return Object.fromEntries(
    Object.entries(inputs).map(([k, v]) => {
      const rows = tf.slice(v, start, n);
      if (n === size) return [k, rows];
      const pad = tf.slice(v, start, 1);
      return [k, tf.concat([rows, ...Array.from({ length: size - n }, () => pad)])];
    }),
  );
}

/**
 * `unet` as a ModelFn whose gradient with respect to x is computed chunk by chunk (see the header). `forward` is
 * the raw forward the sampler uses (ONNX Runtime's runner, or the UNet itself); `runtime` says where the backward
 * runs. dispose frees the traced graphs' sessions.
 */
export function differentiableDenoiser(
  unet: UNet,
  forward: (x: Tensor4D, t: Tensor1D, cond: Conditioning) => Tensor4D,
  runtime: Runtime,
  chunk = VJP_CHUNK,
): { model: ModelFn; dispose(): void } {
  const fn = vjpFn(unet);
  const traced = runtime === "onnx" ? new OnnxTraced("denoiser backward", fn, { fallback: true }) : undefined;
  const run = (inputs: Record<string, Tensor>): Tensor =>
    traced ? traced.run(inputs) : tf.tidy(() => fn(inputs));
  const vjp = (x: Tensor4D, t: Tensor1D, cond: Conditioning, dy: Tensor4D): Tensor4D =>
    tf.tidy(() => {
      const b = x.shape[0];
      const size = Math.ceil(b / Math.ceil(b / chunk));
      const inputs = { x, t, dy, ...condInputs(cond) };
      const parts: Tensor[] = [];
      for (let start = 0; start < b; start += size) {
        const n = Math.min(size, b - start);
        const g = run(chunkOf(inputs, start, n, size));
        parts.push(n === size ? g : tf.slice(g, 0, n));
      }
      return (parts.length === 1 ? parts[0]! : tf.concat(parts)) as Tensor4D;
    });
  const channels = unet.config.inChannels;
  const model: ModelFn = (x, t, cond) =>
    tf.tidy(() => {
      const condTensors = condInputs(cond);
      const names = Object.keys(condTensors);
      const raw = tf.customGrad((...args) => {
        const xv = args[0] as Tensor4D;
        // t and the conditioning are the caller's, freed before the backward pass runs: the tape keeps clones.
        (args[1] as (s: Tensor[]) => void)([xv, t, ...Object.values(condTensors)]);
        return {
          value: forward(xv, t, cond),
          gradFunc: (dy: Tensor, saved: Tensor[]) => {
            const [xs, ts, ...cs] = saved;
            const c = Object.fromEntries(names.map((k, i) => [k, cs[i]!])) as Conditioning;
            return withNestedTape(() => vjp(xs as Tensor4D, ts as Tensor1D, c, dy as Tensor4D));
          },
        };
      })(x) as Tensor4D;
      return splitPrediction(raw, channels);
    });
  return { model, dispose: () => traced?.dispose() };
}
