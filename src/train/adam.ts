// AdamW (Loshchilov & Hutter 2019) over named variables, with an exponential moving average of the weights
// (the EMA is what diffusion models ship: Ho et al. 2020, §4). State is plain named tensors so a checkpoint is
// one safetensors file and a resumed run continues bit-for-bit.
import { type Tensor, tf, type Variable } from "../core/engine.ts";

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

export class Adam {
  step = 0;
  readonly m = new Map<string, Variable>();
  readonly v = new Map<string, Variable>();
  readonly emaWeights = new Map<string, Variable>();

  constructor(
    readonly params: [string, Variable][],
    readonly opts: AdamOptions,
  ) {
    for (const [name, p] of params) {
      this.m.set(name, tf.variable(tf.zerosLike(p), false));
      this.v.set(name, tf.variable(tf.zerosLike(p), false));
      if (opts.ema > 0) this.emaWeights.set(name, tf.variable(p.clone(), false));
    }
  }

  /** Applies one update from gradients given in the params' order. Returns the pre-clip global gradient norm. */
  apply(grads: Tensor[], lr = this.opts.lr): number {
    this.step += 1;
    const { beta1, beta2, eps, weightDecay, clipNorm, ema } = this.opts;
    const norm = tf.tidy(() => tf.sqrt(tf.addN(grads.map((g) => tf.sum(tf.square(g))))).dataSync()[0] ?? 0);
    const scale = clipNorm > 0 && norm > clipNorm ? clipNorm / norm : 1;
    const bc1 = 1 - beta1 ** this.step;
    const bc2 = 1 - beta2 ** this.step;
    // Without a warm-up a 0.999 EMA still holds 0.999^n of the random init after n steps (45% at step 800),
    // which ruins short runs and early checkpoints; this is the warm-up of TensorFlow's
    // ExponentialMovingAverage(num_updates) used by guided-diffusion-era code.
    const decay = Math.min(ema, (1 + this.step) / (10 + this.step));
    tf.tidy(() => {
      this.params.forEach(([name, p], i) => {
        const g = tf.mul(grads[i]!, scale);
        const m = this.m.get(name)!;
        const v = this.v.get(name)!;
        m.assign(tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1)));
        v.assign(tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2)));
        const update = tf.div(tf.div(m, bc1), tf.add(tf.sqrt(tf.div(v, bc2)), eps));
        const decayed = weightDecay > 0 && p.rank > 1 ? tf.mul(p, 1 - lr * weightDecay) : p;
        p.assign(tf.sub(decayed, tf.mul(update, lr)));
        const e = this.emaWeights.get(name);
        if (e) e.assign(tf.add(tf.mul(e, decay), tf.mul(p, 1 - decay)));
      });
    });
    return norm;
  }

  /** Named state for checkpoints: `m.<name>`, `v.<name>`, `ema.<name>`. */
  state(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [n, t] of this.m) out.set(`m.${n}`, t);
    for (const [n, t] of this.v) out.set(`v.${n}`, t);
    for (const [n, t] of this.emaWeights) out.set(`ema.${n}`, t);
    return out;
  }

  load(state: Map<string, Tensor>, step: number, source: string): void {
    const put = (prefix: string, map: Map<string, Variable>) => {
      for (const [n, t] of map) {
        const s = state.get(`${prefix}.${n}`);
        if (!s) throw new Error(`${source}: optimizer state '${prefix}.${n}' is missing`);
        if (s.shape.join(",") !== t.shape.join(",")) {
          throw new Error(`${source}: '${prefix}.${n}' has shape [${s.shape}], expected [${t.shape}]`);
        }
        t.assign(s);
      }
    };
    put("m", this.m);
    put("v", this.v);
    put("ema", this.emaWeights);
    this.step = step;
  }

  dispose(): void {
    for (const map of [this.m, this.v, this.emaWeights]) for (const t of map.values()) t.dispose();
  }
}
