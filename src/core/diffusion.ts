// Gaussian diffusion (Ho et al. 2020) with guided-diffusion's conventions: learned-range variance (Nichol &
// Dhariwal 2021), timestep respacing, and gradient guidance (Dhariwal & Nichol 2021). Tables are built in float64
// and cast to float32 only when a step reads them, as the official code does, so that respaced tables whose
// entries span 1e-5..2e4 keep their precision.
import type { Tensor, Tensor1D, Tensor4D } from "./engine.ts";
import { tf } from "./engine.ts";
import type { CondFn, Prediction, StepInfo } from "./types.ts";

export type ScheduleName = "linear" | "squaredcos_cap_v2" | "cosine";
export type ModelMeanType = "eps" | "x0" | "v";
export type ModelVarType = "learned_range" | "fixed_small" | "fixed_large";
/**
 * A respaced index i, one for the whole batch or one per batch element; as an int32 tensor [B] the lookups stay
 * inside the graph (the trainer's losses, which must be pure functions of their input tensors).
 */
export type TimestepArg = number | readonly number[] | Tensor1D;

/**
 * Betas of a named schedule. "linear" is guided-diffusion's scaled form (scale = 1000/T so that any T spans the
 * same noise levels as T = 1000, Ho et al. 2020 §4); "squaredcos_cap_v2"/"cosine" is Nichol & Dhariwal 2021 eq. 17
 * with s = 0.008 and betas capped at 0.999.
 */
export function getNamedBetaSchedule(name: ScheduleName | string, steps: number): Float64Array {
  if (!Number.isInteger(steps) || steps < 1)
    throw new Error(`beta schedule: steps must be a positive integer, got ${steps}`);
  const betas = new Float64Array(steps);
  if (name === "linear") {
    const scale = 1000 / steps;
    const start = scale * 0.0001;
    const end = scale * 0.02;
    // numpy.linspace: start + i·step, with the last value pinned to `end`.
    const step = steps > 1 ? (end - start) / (steps - 1) : 0;
    for (let i = 0; i < steps; i++) betas[i] = i * step + start;
    if (steps > 1) betas[steps - 1] = end;
    return betas;
  }
  if (name === "squaredcos_cap_v2" || name === "cosine") {
    const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
    for (let i = 0; i < steps; i++) {
      betas[i] = Math.min(1 - alphaBar((i + 1) / steps) / alphaBar(i / steps), 0.999);
    }
    return betas;
  }
  throw new Error(`unknown beta schedule '${name}': expected linear, squaredcos_cap_v2 or cosine`);
}

/** Python's round(): half to even, which the official section arithmetic relies on. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * The set of original timesteps kept by a respacing spec, ascending. Forms: "N" (one section), "a,b,c" (equal
 * sections of T, each strided evenly with a float accumulator and half-to-even rounding, as guided-diffusion's
 * space_timesteps), "ddimN" (the integer stride i with len(range(0, T, i)) == N), and GLIDE's "fast27" (sections
 * 10,10,3,2,2 with T-1 replaced by T-3, which reduces DDIM artifacts from the noisiest step). An empty spec keeps
 * every step.
 */
export function spaceTimesteps(T: number, spec: string | number | readonly number[]): number[] {
  if (Array.isArray(spec)) return [...new Set(spec as number[])].sort((a, b) => a - b);
  const text = String(spec).trim();
  if (text === "") return Array.from({ length: T }, (_, i) => i);
  if (text === "fast27") {
    const steps = new Set(spaceTimesteps(T, "10,10,3,2,2"));
    steps.delete(T - 1);
    steps.add(T - 3);
    return [...steps].sort((a, b) => a - b);
  }
  if (text.startsWith("ddim")) {
    const desired = Number(text.slice(4));
    if (!Number.isInteger(desired) || desired < 1)
      throw new Error(`respacing '${spec}': expected ddimN with N ≥ 1`);
    for (let stride = 1; stride < T; stride++) {
      if (Math.ceil(T / stride) === desired) return Array.from({ length: desired }, (_, i) => i * stride);
    }
    throw new Error(`respacing '${spec}': no integer stride gives exactly ${desired} steps out of ${T}`);
  }
  const counts = text.split(",").map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < 0) throw new Error(`respacing '${spec}': '${s}' is not a step count`);
    return n;
  });
  const sizePer = Math.floor(T / counts.length);
  const extra = T % counts.length;
  const all = new Set<number>();
  let start = 0;
  counts.forEach((count, i) => {
    const size = sizePer + (i < extra ? 1 : 0);
    if (size < count)
      throw new Error(`respacing '${spec}': cannot take ${count} steps from a section of ${size}`);
    const stride = count <= 1 ? 1 : (size - 1) / (count - 1);
    // Accumulate like the reference (repeated addition, not i·stride) so that ties round identically.
    let cur = 0;
    for (let j = 0; j < count; j++) {
      all.add(start + roundHalfEven(cur));
      cur += stride;
    }
    start += size;
  });
  return [...all].sort((a, b) => a - b);
}

/** Every per-step table of Ho et al. 2020 §2/§3.2, in float64. */
export interface DiffusionTables {
  betas: Float64Array;
  alphasCumprod: Float64Array;
  alphasCumprodPrev: Float64Array;
  alphasCumprodNext: Float64Array;
  sqrtAlphasCumprod: Float64Array;
  sqrtOneMinusAlphasCumprod: Float64Array;
  logOneMinusAlphasCumprod: Float64Array;
  sqrtRecipAlphasCumprod: Float64Array;
  sqrtRecipm1AlphasCumprod: Float64Array;
  posteriorVariance: Float64Array;
  /** log σ̃², with index 0 replaced by index 1 because σ̃²_0 = 0 (Nichol & Dhariwal 2021 §3.1). */
  posteriorLogVarianceClipped: Float64Array;
  posteriorMeanCoef1: Float64Array;
  posteriorMeanCoef2: Float64Array;
  logBetas: Float64Array;
}

/** Tables from betas: ᾱ (Ho eq. 4), posterior q(x_{t-1}|x_t,x0) mean coefficients and variance (Ho eq. 6–7). */
export function buildTables(betas: Float64Array): DiffusionTables {
  const n = betas.length;
  const make = () => new Float64Array(n);
  const t: DiffusionTables = {
    betas: Float64Array.from(betas),
    alphasCumprod: make(),
    alphasCumprodPrev: make(),
    alphasCumprodNext: make(),
    sqrtAlphasCumprod: make(),
    sqrtOneMinusAlphasCumprod: make(),
    logOneMinusAlphasCumprod: make(),
    sqrtRecipAlphasCumprod: make(),
    sqrtRecipm1AlphasCumprod: make(),
    posteriorVariance: make(),
    posteriorLogVarianceClipped: make(),
    posteriorMeanCoef1: make(),
    posteriorMeanCoef2: make(),
    logBetas: make(),
  };
  let acc = 1;
  for (let i = 0; i < n; i++) {
    const b = betas[i]!;
    if (!(b > 0 && b <= 1)) throw new Error(`betas must lie in (0, 1], got ${b} at index ${i}`);
    acc *= 1 - b;
    t.alphasCumprod[i] = acc;
  }
  for (let i = 0; i < n; i++) {
    const b = betas[i]!;
    const ac = t.alphasCumprod[i]!;
    const prev = i === 0 ? 1 : t.alphasCumprod[i - 1]!;
    t.alphasCumprodPrev[i] = prev;
    t.alphasCumprodNext[i] = i === n - 1 ? 0 : t.alphasCumprod[i + 1]!;
    t.sqrtAlphasCumprod[i] = Math.sqrt(ac);
    t.sqrtOneMinusAlphasCumprod[i] = Math.sqrt(1 - ac);
    t.logOneMinusAlphasCumprod[i] = Math.log(1 - ac);
    t.sqrtRecipAlphasCumprod[i] = Math.sqrt(1 / ac);
    t.sqrtRecipm1AlphasCumprod[i] = Math.sqrt(1 / ac - 1);
    t.posteriorVariance[i] = (b * (1 - prev)) / (1 - ac);
    t.posteriorMeanCoef1[i] = (b * Math.sqrt(prev)) / (1 - ac);
    t.posteriorMeanCoef2[i] = ((1 - prev) * Math.sqrt(1 - b)) / (1 - ac);
    t.logBetas[i] = Math.log(b);
  }
  for (let i = 0; i < n; i++) {
    t.posteriorLogVarianceClipped[i] = Math.log(
      n > 1 && i === 0 ? t.posteriorVariance[1]! : t.posteriorVariance[i]!,
    );
  }
  return t;
}

/**
 * Betas of the respaced process: keeping only `use` (ascending original timesteps) gives
 * β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i-1}}, so that ᾱ' equals ᾱ at the kept steps (Nichol & Dhariwal 2021 §4).
 */
export function respaceBetas(betas: Float64Array, use: readonly number[]): Float64Array {
  const keep = new Set(use);
  const out: number[] = [];
  let acc = 1;
  let last = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= 1 - betas[i]!;
    if (keep.has(i)) {
      out.push(1 - acc / last);
      last = acc;
    }
  }
  return Float64Array.from(out);
}

export interface DiffusionConfig {
  schedule: ScheduleName;
  /** Steps of the base process (T). */
  steps: number;
  /** Respacing spec (see spaceTimesteps) or explicit kept timesteps; omitted = all T steps. */
  respacing?: string | readonly number[];
  modelMeanType?: ModelMeanType;
  modelVarType?: ModelVarType;
}

export interface PMeanVarianceOptions {
  clipDenoised?: boolean;
  /** Applied to the predicted x0 before clipping; the sampler binds the step. */
  denoisedFn?: (x0: Tensor4D) => Tensor4D;
}

/** Output of p(x_{t-1} | x_t). `eps` is the noise implied by the processed predXstart, as DDIM and condition_score use. */
export interface PMeanVariance {
  mean: Tensor4D;
  variance: Tensor4D;
  logVariance: Tensor4D;
  predXstart: Tensor4D;
  eps: Tensor4D;
}

export interface TrainingLosses {
  /** Per-example losses [B]: mse + vb. */
  loss: Tensor1D;
  mse: Tensor1D;
  /** Variational bound term in bits per dim (zeros unless the variance is learned). */
  vb: Tensor1D;
}

/** Passes values through but blocks their gradient (tfjs has no stop_gradient op). */
const stopGradient = (x: Tensor4D): Tensor4D =>
  tf.customGrad((...inputs) => ({
    value: tf.clone(inputs[0] as Tensor),
    gradFunc: (dy: Tensor) => tf.zerosLike(dy),
  }))(x) as Tensor4D;

/** Mean over every axis but the batch. */
function meanFlat(x: Tensor): Tensor1D {
  const axes = Array.from({ length: x.rank - 1 }, (_, i) => i + 1);
  return tf.mean(x, axes) as Tensor1D;
}

export class GaussianDiffusion implements DiffusionTables {
  readonly betas!: Float64Array;
  readonly alphasCumprod!: Float64Array;
  readonly alphasCumprodPrev!: Float64Array;
  readonly alphasCumprodNext!: Float64Array;
  readonly sqrtAlphasCumprod!: Float64Array;
  readonly sqrtOneMinusAlphasCumprod!: Float64Array;
  readonly logOneMinusAlphasCumprod!: Float64Array;
  readonly sqrtRecipAlphasCumprod!: Float64Array;
  readonly sqrtRecipm1AlphasCumprod!: Float64Array;
  readonly posteriorVariance!: Float64Array;
  readonly posteriorLogVarianceClipped!: Float64Array;
  readonly posteriorMeanCoef1!: Float64Array;
  readonly posteriorMeanCoef2!: Float64Array;
  readonly logBetas!: Float64Array;
  /** Respaced index → original timestep (what models receive). */
  readonly timestepMap: number[];
  readonly numTimesteps: number;
  readonly originalNumSteps: number;
  readonly modelMeanType: ModelMeanType;
  readonly modelVarType: ModelVarType;

  constructor(
    betas: Float64Array,
    opts: {
      timestepMap?: number[];
      originalNumSteps?: number;
      modelMeanType?: ModelMeanType;
      modelVarType?: ModelVarType;
    } = {},
  ) {
    Object.assign(this, buildTables(betas));
    this.numTimesteps = betas.length;
    this.timestepMap = opts.timestepMap ?? Array.from({ length: betas.length }, (_, i) => i);
    if (this.timestepMap.length !== betas.length) {
      throw new Error(`timestepMap has ${this.timestepMap.length} entries for ${betas.length} betas`);
    }
    this.originalNumSteps = opts.originalNumSteps ?? betas.length;
    this.modelMeanType = opts.modelMeanType ?? "eps";
    this.modelVarType = opts.modelVarType ?? "fixed_small";
  }

  private fixed: { variance: Float64Array; logVariance: Float64Array } | undefined;

  /**
   * Min-SNR-γ loss weights per index (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
   * Strategy", eq. 7 and §3.4): the x0-space weight min(SNR, γ), expressed for what the model predicts —
   * min(SNR, γ)/SNR for ε, min(SNR, γ) for x0, min(SNR, γ)/(SNR + 1) for v — with SNR_t = ᾱ_t/(1 − ᾱ_t). For ε it
   * leaves the noisy steps (SNR ≤ γ) at 1 and scales down the nearly clean ones that otherwise dominate the loss.
   */
  minSnrWeights(kind: Prediction["kind"], gamma: number): Float64Array {
    if (!(gamma > 0)) throw new Error(`min-SNR weighting: gamma must be positive, got ${gamma}`);
    return this.alphasCumprod.map((a) => {
      const snr = a / (1 - a);
      const w = Math.min(snr, gamma);
      return kind === "eps" ? w / snr : kind === "x0" ? w : w / (snr + 1);
    });
  }

  /** Σ of the fixed variance types per index: β̃ (fixed_small), or β with β̃_1 at t = 0 (fixed_large). */
  private fixedVariance(): { variance: Float64Array; logVariance: Float64Array } {
    if (!this.fixed) {
      const large = this.modelVarType === "fixed_large";
      const variance = large
        ? Float64Array.from(this.betas, (b, i) =>
            i === 0 && this.numTimesteps > 1 ? this.posteriorVariance[1]! : b,
          )
        : this.posteriorVariance;
      const logVariance = large ? variance.map(Math.log) : this.posteriorLogVarianceClipped;
      this.fixed = { variance, logVariance };
    }
    return this.fixed;
  }

  /** StepInfo of respaced index i in a full reverse loop. */
  stepInfo(index: number): StepInfo {
    return { index, t: this.timestepMap[index]!, k: this.numTimesteps - 1 - index };
  }

  /** A table entry as float32 broadcastable against NHWC (a scalar, or [B,1,1,1] for per-example t). */
  extract(table: Float64Array, t: TimestepArg): Tensor {
    const at = (i: number) => {
      const v = table[i];
      if (v === undefined || !Number.isInteger(i)) {
        throw new Error(`timestep index ${i} out of range 0..${this.numTimesteps - 1}`);
      }
      return v;
    };
    if (typeof t === "number") return tf.scalar(at(t), "float32");
    if (t instanceof tf.Tensor) {
      if (t.dtype !== "int32" || t.rank !== 1) {
        throw new Error(`timesteps: expected an int32 tensor [B], got ${t.dtype} [${t.shape}]`);
      }
      return tf.reshape(tf.gather(tf.tensor1d(Float32Array.from(table)), t), [t.shape[0], 1, 1, 1]);
    }
    return tf.tensor4d(Float32Array.from(t, at), [t.length, 1, 1, 1]);
  }

  /** x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε (Ho et al. 2020 eq. 4). */
  qSample(x0: Tensor4D, t: TimestepArg, noise: Tensor4D): Tensor4D {
    return tf.tidy(() =>
      tf.add(
        tf.mul(this.extract(this.sqrtAlphasCumprod, t), x0),
        tf.mul(this.extract(this.sqrtOneMinusAlphasCumprod, t), noise),
      ),
    );
  }

  /** Posterior q(x_{t-1} | x_t, x0): mean and variance (Ho et al. 2020 eq. 6–7). */
  qPosteriorMeanVariance(
    x0: Tensor4D,
    xt: Tensor4D,
    t: TimestepArg,
  ): { mean: Tensor4D; variance: Tensor4D; logVarianceClipped: Tensor4D } {
    return tf.tidy(() => {
      const mean = this.posteriorMean(x0, xt, t);
      const variance = tf.mul(this.extract(this.posteriorVariance, t), tf.onesLike(xt)) as Tensor4D;
      const logVarianceClipped = tf.mul(
        this.extract(this.posteriorLogVarianceClipped, t),
        tf.onesLike(xt),
      ) as Tensor4D;
      return { mean, variance, logVarianceClipped };
    });
  }

  private posteriorMean(x0: Tensor4D, xt: Tensor4D, t: TimestepArg): Tensor4D {
    return tf.tidy(() =>
      tf.add(
        tf.mul(this.extract(this.posteriorMeanCoef1, t), x0),
        tf.mul(this.extract(this.posteriorMeanCoef2, t), xt),
      ),
    );
  }

  /** x0 = sqrt(1/ᾱ)·x_t − sqrt(1/ᾱ − 1)·ε (Ho et al. 2020 eq. 4 solved for x0; used by eq. 11 and 15). */
  predictXstartFromEps(xt: Tensor4D, t: TimestepArg, eps: Tensor4D): Tensor4D {
    return tf.tidy(() =>
      tf.sub(
        tf.mul(this.extract(this.sqrtRecipAlphasCumprod, t), xt),
        tf.mul(this.extract(this.sqrtRecipm1AlphasCumprod, t), eps),
      ),
    );
  }

  /** ε = (sqrt(1/ᾱ)·x_t − x0) / sqrt(1/ᾱ − 1), the inverse of predictXstartFromEps. */
  predictEpsFromXstart(xt: Tensor4D, t: TimestepArg, x0: Tensor4D): Tensor4D {
    return tf.tidy(() =>
      tf.div(
        tf.sub(tf.mul(this.extract(this.sqrtRecipAlphasCumprod, t), xt), x0),
        this.extract(this.sqrtRecipm1AlphasCumprod, t),
      ),
    );
  }

  /** v-parameterisation (Salimans & Ho 2022 §4): x0 = sqrt(ᾱ)·x_t − sqrt(1−ᾱ)·v. */
  predictXstartFromV(xt: Tensor4D, t: TimestepArg, v: Tensor4D): Tensor4D {
    return tf.tidy(() =>
      tf.sub(
        tf.mul(this.extract(this.sqrtAlphasCumprod, t), xt),
        tf.mul(this.extract(this.sqrtOneMinusAlphasCumprod, t), v),
      ),
    );
  }

  /** The v target for training: v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0 (Salimans & Ho 2022 §4). */
  vTarget(x0: Tensor4D, t: TimestepArg, noise: Tensor4D): Tensor4D {
    return tf.tidy(() =>
      tf.sub(
        tf.mul(this.extract(this.sqrtAlphasCumprod, t), noise),
        tf.mul(this.extract(this.sqrtOneMinusAlphasCumprod, t), x0),
      ),
    );
  }

  /**
   * p(x_{t-1} | x_t) from a model prediction: x0 from eps/x0/v, then optional denoisedFn and clipping, then the
   * posterior mean (Ho et al. 2020 eq. 11 via eq. 7). Variance: learned range (Nichol & Dhariwal 2021 eq. 15:
   * log Σ = v'·log β + (1−v')·log β̃ with v' = (v+1)/2), fixed_small (β̃) or fixed_large (β, with β̃_1 at t=0).
   */
  pMeanVariance(
    pred: Prediction,
    x: Tensor4D,
    t: TimestepArg,
    opts: PMeanVarianceOptions = {},
  ): PMeanVariance {
    return tf.tidy(() => {
      let variance: Tensor4D;
      let logVariance: Tensor4D;
      if (this.modelVarType === "learned_range") {
        if (!pred.varValues)
          throw new Error("pMeanVariance: learned_range variance needs Prediction.varValues");
        const minLog = this.extract(this.posteriorLogVarianceClipped, t);
        const maxLog = this.extract(this.logBetas, t);
        const frac = tf.div(tf.add(pred.varValues, 1), 2);
        logVariance = tf.add(tf.mul(frac, maxLog), tf.mul(tf.sub(1, frac), minLog)) as Tensor4D;
        variance = tf.exp(logVariance);
      } else {
        const fixed = this.fixedVariance();
        const ones = tf.onesLike(x);
        variance = tf.mul(this.extract(fixed.variance, t), ones) as Tensor4D;
        logVariance = tf.mul(this.extract(fixed.logVariance, t), ones) as Tensor4D;
      }
      let x0: Tensor4D;
      if (pred.kind === "eps") x0 = this.predictXstartFromEps(x, t, pred.out);
      else if (pred.kind === "v") x0 = this.predictXstartFromV(x, t, pred.out);
      else x0 = pred.out;
      if (opts.denoisedFn) x0 = opts.denoisedFn(x0);
      if (opts.clipDenoised) x0 = tf.clipByValue(x0, -1, 1);
      const mean = this.posteriorMean(x0, x, t);
      const eps = this.predictEpsFromXstart(x, t, x0);
      return { mean, variance, logVariance, predXstart: x0, eps };
    });
  }

  /**
   * Classifier guidance on the mean (Dhariwal & Nichol 2021 Algorithm 1, condition_mean): μ' = μ + Σ·∇x log p(y|x_t),
   * with `condFn` returning the already-scaled gradient. Returns a new PMeanVariance sharing nothing with `pmv`.
   */
  conditionMean(pmv: PMeanVariance, x: Tensor4D, step: StepInfo, condFn: CondFn): PMeanVariance {
    return tf.tidy(() => {
      const grad = condFn(x, step);
      return {
        mean: tf.add(pmv.mean, tf.mul(pmv.variance, grad)) as Tensor4D,
        variance: tf.clone(pmv.variance),
        logVariance: tf.clone(pmv.logVariance),
        predXstart: tf.clone(pmv.predXstart),
        eps: tf.clone(pmv.eps),
      };
    });
  }

  /**
   * Classifier guidance on the score (Dhariwal & Nichol 2021 Algorithm 2 and eq. 14, condition_score):
   * ε' = ε − sqrt(1−ᾱ)·∇x log p(y|x_t), then x0 and the posterior mean are recomputed from ε' (not re-clipped).
   */
  conditionScore(pmv: PMeanVariance, x: Tensor4D, step: StepInfo, condFn: CondFn): PMeanVariance {
    return tf.tidy(() => {
      const t = step.index;
      const grad = condFn(x, step);
      // The reference forms sqrt(1−ᾱ) in float32 from the float32 ᾱ.
      const abar = Math.fround(this.alphasCumprod[t]!);
      const coef = Math.fround(Math.sqrt(Math.fround(1 - abar)));
      const eps = tf.sub(this.predictEpsFromXstart(x, t, pmv.predXstart), tf.mul(coef, grad)) as Tensor4D;
      const predXstart = this.predictXstartFromEps(x, t, eps);
      const mean = this.posteriorMean(predXstart, x, t);
      return {
        mean,
        variance: tf.clone(pmv.variance),
        logVariance: tf.clone(pmv.logVariance),
        predXstart,
        eps,
      };
    });
  }

  /**
   * L_vlb term for each example in bits/dim (Ho et al. 2020 eq. 5; Nichol & Dhariwal 2021 eq. 4–5): KL between the
   * posterior and p at t > 0, discretized decoder NLL at t = 0.
   */
  vbTermsBpd(
    pred: Prediction,
    x0: Tensor4D,
    xt: Tensor4D,
    t: readonly number[] | Tensor1D,
    clipDenoised = false,
  ): Tensor1D {
    return tf.tidy(() => {
      const post = this.qPosteriorMeanVariance(x0, xt, t);
      const out = this.pMeanVariance(pred, xt, t, { clipDenoised });
      const kl = tf.div(
        meanFlat(normalKl(post.mean, post.logVarianceClipped, out.mean, out.logVariance)),
        Math.LN2,
      );
      const nll = tf.div(
        meanFlat(
          tf.neg(discretizedGaussianLogLikelihood(x0, out.mean, tf.mul(0.5, out.logVariance) as Tensor4D)),
        ),
        Math.LN2,
      );
      const isFirst =
        t instanceof tf.Tensor
          ? tf.equal(t, 0)
          : tf.tensor1d(
              Uint8Array.from(t, (i) => (i === 0 ? 1 : 0)),
              "bool",
            );
      return tf.where(isFirst, nll, kl) as Tensor1D;
    });
  }

  /**
   * Training losses at respaced indices t for one batch (improved-diffusion's hybrid objective, Nichol & Dhariwal
   * 2021 §3.1): L_simple = ||target − out||² (Ho et al. 2020 eq. 14) with target ε, x0 or v, plus, for
   * learned-range variance, L_vlb computed with the mean's gradient stopped so that L_vlb only trains Σ. The vb term
   * is scaled by T/1000 as guided-diffusion's RESCALED_MSE does. `minSnrGamma` weights L_simple per timestep
   * (minSnrWeights); L_vlb keeps its weight.
   */
  trainingLosses(
    pred: Prediction,
    x0: Tensor4D,
    t: readonly number[] | Tensor1D,
    noise: Tensor4D,
    opts: { minSnrGamma?: number } = {},
  ): TrainingLosses {
    return tf.tidy(() => {
      const xt = this.qSample(x0, t, noise);
      const target =
        pred.kind === "eps" ? noise : pred.kind === "x0" ? x0 : (this.vTarget(x0, t, noise) as Tensor4D);
      let mse = meanFlat(tf.squaredDifference(target, pred.out));
      if (opts.minSnrGamma) {
        mse = tf.mul(mse, tf.reshape(this.extract(this.minSnrWeights(pred.kind, opts.minSnrGamma), t), [-1]));
      }
      let vb: Tensor1D;
      if (this.modelVarType === "learned_range") {
        const frozen: Prediction = { ...pred, out: stopGradient(pred.out) };
        vb = tf.mul(this.vbTermsBpd(frozen, x0, xt, t, false), this.numTimesteps / 1000) as Tensor1D;
      } else {
        vb = tf.zerosLike(mse);
      }
      return { loss: tf.add(mse, vb) as Tensor1D, mse, vb };
    });
  }
}

/** Respaced diffusion from a schedule name (guided-diffusion's create_gaussian_diffusion + SpacedDiffusion). */
export function createDiffusion(config: DiffusionConfig): GaussianDiffusion {
  const base = getNamedBetaSchedule(config.schedule, config.steps);
  const use = spaceTimesteps(config.steps, config.respacing ?? "");
  for (const t of use) {
    if (!Number.isInteger(t) || t < 0 || t >= config.steps) {
      throw new Error(`respacing: timestep ${t} outside 0..${config.steps - 1}`);
    }
  }
  const opts = {
    timestepMap: use,
    originalNumSteps: config.steps,
    ...(config.modelMeanType ? { modelMeanType: config.modelMeanType } : {}),
    ...(config.modelVarType ? { modelVarType: config.modelVarType } : {}),
  };
  return new GaussianDiffusion(respaceBetas(base, use), opts);
}

/** KL(N(μ1, e^{lv1}) || N(μ2, e^{lv2})) elementwise, in nats (the Gaussian KL of Ho et al. 2020 eq. 5). */
export function normalKl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor): Tensor {
  return tf.tidy(() => {
    const a = tf.add(tf.sub(logvar2, logvar1), -1);
    const b = tf.exp(tf.sub(logvar1, logvar2));
    const c = tf.mul(tf.squaredDifference(mean1, mean2), tf.exp(tf.neg(logvar2)));
    return tf.mul(0.5, tf.add(tf.add(a, b), c));
  });
}

/** Φ(x) by the tanh approximation (Page 1977), which the reference decoder uses. */
export function approxStandardNormalCdf(x: Tensor): Tensor {
  return tf.tidy(() =>
    tf.mul(
      0.5,
      tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3)))))),
    ),
  );
}

/**
 * log-likelihood of uint8-discretised images in [-1, 1] under N(means, e^{2·logScales}) (Ho et al. 2020 eq. 13):
 * bins of width 2/255, with the edge bins extended to ±∞.
 */
export function discretizedGaussianLogLikelihood(x: Tensor, means: Tensor, logScales: Tensor): Tensor {
  return tf.tidy(() => {
    const centered = tf.sub(x, means);
    const invStdv = tf.exp(tf.neg(logScales));
    const cdfPlus = approxStandardNormalCdf(tf.mul(invStdv, tf.add(centered, 1 / 255)));
    const cdfMin = approxStandardNormalCdf(tf.mul(invStdv, tf.sub(centered, 1 / 255)));
    const logCdfPlus = tf.log(tf.maximum(cdfPlus, 1e-12));
    const logOneMinusCdfMin = tf.log(tf.maximum(tf.sub(1, cdfMin), 1e-12));
    const logCdfDelta = tf.log(tf.maximum(tf.sub(cdfPlus, cdfMin), 1e-12));
    const shape = tf.broadcast_util.assertAndGetBroadcastShape(x.shape, logCdfDelta.shape);
    const xb = tf.broadcastTo(x, shape);
    return tf.where(
      tf.less(xb, -0.999),
      tf.broadcastTo(logCdfPlus, shape),
      tf.where(
        tf.greater(xb, 0.999),
        tf.broadcastTo(logOneMinusCdfMin, shape),
        tf.broadcastTo(logCdfDelta, shape),
      ),
    );
  });
}
