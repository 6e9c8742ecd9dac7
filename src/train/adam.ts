// AdamW (Loshchilov & Hutter 2019) over one flat float32 buffer of named parameters, with an exponential moving
// average of the weights (the EMA is what diffusion models ship: Ho et al. 2020, §4). It runs in the trainer's own
// thread on plain arrays, whichever runtime computes the gradients (TensorFlow.js workers or ONNX Runtime), so one
// optimizer serves both and a checkpoint is one safetensors file of named arrays, which resumes bit for bit on the
// same runtime with the same worker or thread count.
import type { NamedArrays } from "./worker.ts";

export interface AdamOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this value (0: off). */
  clipNorm: number;
  /** EMA decay of the weights (0: no EMA); warmed up as min(ema, (1 + step) / (10 + step)). */
  ema: number;
}

/** A parameter's place in the flat buffer. */
export interface Slot {
  name: string;
  shape: number[];
  offset: number;
  size: number;
}

export function layout(params: readonly { name: string; shape: readonly number[] }[]): Slot[] {
  let offset = 0;
  return params.map(({ name, shape }) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const slot = { name, shape: [...shape], offset, size };
    offset += size;
    return slot;
  });
}

export class Adam {
  /** Number of updates applied (bias correction and the EMA warm-up count from it). */
  step = 0;
  readonly m: Float32Array;
  readonly v: Float32Array;
  readonly ema: Float32Array | undefined;

  constructor(
    readonly slots: readonly Slot[],
    readonly params: Float32Array,
    readonly opts: AdamOptions,
  ) {
    this.m = new Float32Array(params.length);
    this.v = new Float32Array(params.length);
    this.ema = opts.ema > 0 ? params.slice() : undefined;
  }

  /** Applies one update from the flat gradient (same layout as the parameters). Returns the pre-clip norm. */
  apply(grad: Float32Array, lr = this.opts.lr): number {
    if (grad.length !== this.params.length) {
      throw new Error(`Adam: gradient of ${grad.length} values for ${this.params.length} parameters`);
    }
    this.step += 1;
    const { beta1, beta2, eps, weightDecay, clipNorm, ema } = this.opts;
    let sq = 0;
    for (let i = 0; i < grad.length; i++) sq += grad[i]! * grad[i]!;
    const norm = Math.sqrt(sq);
    const scale = clipNorm > 0 && norm > clipNorm ? clipNorm / norm : 1;
    const bc1 = 1 - beta1 ** this.step;
    const bc2 = 1 - beta2 ** this.step;
    // Without a warm-up a 0.999 EMA still holds 0.999^n of the random init after n steps (45% at step 800),
    // which ruins short runs and early checkpoints; this is the warm-up of TensorFlow's
    // ExponentialMovingAverage(num_updates) used by guided-diffusion-era code.
    const decay = Math.min(ema, (1 + this.step) / (10 + this.step));
    const { m, v, params: p } = this;
    for (const s of this.slots) {
      // Decoupled weight decay on matrices and filters only, not on biases, norms and scalars.
      const keep = weightDecay > 0 && s.shape.length > 1 ? 1 - lr * weightDecay : 1;
      for (let i = s.offset; i < s.offset + s.size; i++) {
        const g = grad[i]! * scale;
        m[i] = beta1 * m[i]! + (1 - beta1) * g;
        v[i] = beta2 * v[i]! + (1 - beta2) * g * g;
        p[i] = p[i]! * keep - (lr * (m[i]! / bc1)) / (Math.sqrt(v[i]! / bc2) + eps);
      }
    }
    const e = this.ema;
    if (e) for (let i = 0; i < p.length; i++) e[i] = decay * e[i]! + (1 - decay) * p[i]!;
    return norm;
  }

  /** Named state for checkpoints: `m.<name>`, `v.<name>`, `ema.<name>` (views into the buffers). */
  state(): NamedArrays {
    const out: NamedArrays = {};
    for (const s of this.slots) {
      const view = (a: Float32Array) => ({ data: a.subarray(s.offset, s.offset + s.size), shape: s.shape });
      out[`m.${s.name}`] = view(this.m);
      out[`v.${s.name}`] = view(this.v);
      if (this.ema) out[`ema.${s.name}`] = view(this.ema);
    }
    return out;
  }

  load(state: NamedArrays, step: number, source: string): void {
    const put = (prefix: string, into: Float32Array | undefined) => {
      if (!into) return;
      for (const s of this.slots) {
        const a = state[`${prefix}.${s.name}`];
        if (!a) throw new Error(`${source}: optimizer state '${prefix}.${s.name}' is missing`);
        if (a.shape.join(",") !== s.shape.join(",")) {
          throw new Error(`${source}: '${prefix}.${s.name}' has shape [${a.shape}], expected [${s.shape}]`);
        }
        into.set(a.data, s.offset);
      }
    };
    put("m", this.m);
    put("v", this.v);
    put("ema", this.ema);
    this.step = step;
  }
}
