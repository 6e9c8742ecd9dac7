// The one set of layer primitives every model in the project is built from (zoo UNets, GLIDE ports, CLIP).
// Parameter names follow the PyTorch modules they mirror ("input_blocks.0.in_layers.2.weight") so checkpoints map
// one to one; only the tensor layouts differ (conv weights [kh, kw, in, out], linear weights [in, out]).
import type { Tensor, Tensor1D, Tensor2D, Tensor3D, Tensor4D, Variable } from "./engine.ts";
import { tf } from "./engine.ts";
import { expf32 } from "./expf32.ts";
import type { ConvPad } from "./ops.ts";
import * as ops from "./ops.ts";

export { avgPool2x, gelu, silu, upsampleNearest2x } from "./ops.ts";

/**
 * Deterministic parameter initialiser: a seeded xoshiro128** stream in pure JS, so weights are bit-identical on
 * every backend and independent of tf's global random state. Every call advances the stream.
 */
export class Init {
  private s: Uint32Array;

  /**
   * An Init for modules whose every parameter a checkpoint is about to overwrite (loadStateDict is strict by
   * default, so none keeps this value): it allocates zeros and draws nothing, which for GLIDE's 385M-parameter base
   * saves seconds of Box–Muller at start-up.
   */
  static forLoading(): Init {
    return new LoadingInit(0);
  }

  constructor(seed: number) {
    // splitmix32 expands the seed so that nearby seeds give unrelated streams.
    let z = seed >>> 0;
    const next = (): number => {
      z = (z + 0x9e3779b9) >>> 0;
      let t = z;
      t = Math.imul(t ^ (t >>> 16), 0x85ebca6b);
      t = Math.imul(t ^ (t >>> 13), 0xc2b2ae35);
      return (t ^ (t >>> 16)) >>> 0;
    };
    this.s = new Uint32Array([next(), next(), next(), next()]);
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }

  private nextU32(): number {
    const s = this.s;
    let s0 = s[0]!;
    let s1 = s[1]!;
    let s2 = s[2]!;
    let s3 = s[3]!;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
    return r;
  }

  /** Uniform in (0, 1), never exactly 0 (Box–Muller takes its log). */
  private nextUnit(): number {
    return (this.nextU32() + 0.5) / 4294967296;
  }

  normal(shape: number[], std: number): Tensor {
    const n = size(shape);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const r = Math.sqrt(-2 * Math.log(this.nextUnit()));
      const th = 2 * Math.PI * this.nextUnit();
      out[i] = r * Math.cos(th) * std;
      if (i + 1 < n) out[i + 1] = r * Math.sin(th) * std;
    }
    return tf.tensor(out, shape, "float32");
  }

  uniform(shape: number[], limit: number): Tensor {
    const n = size(shape);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (2 * this.nextUnit() - 1) * limit;
    return tf.tensor(out, shape, "float32");
  }

  zeros(shape: number[]): Tensor {
    return tf.zeros(shape, "float32");
  }

  ones(shape: number[]): Tensor {
    return tf.ones(shape, "float32");
  }
}

class LoadingInit extends Init {
  override normal(shape: number[]): Tensor {
    return this.zeros(shape);
  }

  override uniform(shape: number[]): Tensor {
    return this.zeros(shape);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

function size(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

type Entry = { kind: "param"; name: string; v: Variable } | { kind: "child"; name: string; m: Module };

/**
 * Base class: owns tf.Variables and sub-modules under dotted names, in registration order (which is the order
 * namedParameters, stateDict and optimizers see).
 */
export abstract class Module {
  private readonly entries: Entry[] = [];
  private readonly names = new Set<string>();

  private register(name: string): void {
    if (name === "" || name.includes("."))
      throw new Error(`module entry name '${name}' must be non-empty, no dots`);
    if (this.names.has(name)) throw new Error(`${this.constructor.name}: '${name}' registered twice`);
    this.names.add(name);
  }

  /** Registers a trainable variable; `value` is adopted (the variable shares its storage) and must not be reused. */
  protected param(name: string, value: Tensor): Variable {
    this.register(name);
    const v = tf.variable(value, true);
    value.dispose();
    this.entries.push({ kind: "param", name, v });
    return v;
  }

  protected child<M extends Module>(name: string, m: M): M {
    this.register(name);
    this.entries.push({ kind: "child", name, m });
    return m;
  }

  namedParameters(prefix = ""): [string, Variable][] {
    const out: [string, Variable][] = [];
    for (const e of this.entries) {
      const full = prefix ? `${prefix}.${e.name}` : e.name;
      if (e.kind === "param") out.push([full, e.v]);
      else out.push(...e.m.namedParameters(full));
    }
    return out;
  }

  parameters(): Variable[] {
    return this.namedParameters().map(([, v]) => v);
  }

  numParams(): number {
    return this.parameters().reduce((a, v) => a + v.size, 0);
  }

  /** The live variables under their dotted names (no copies: clone them to keep a snapshot across updates). */
  stateDict(): Map<string, Tensor> {
    return new Map(this.namedParameters());
  }

  /**
   * Copies tensors into the parameters. Everything is checked before anything is assigned, and one error lists
   * every missing, unexpected and mis-shaped tensor. strict=false tolerates missing/unexpected names but never a
   * shape mismatch. Tensors of another float dtype are cast.
   */
  loadStateDict(sd: Map<string, Tensor>, opts: { strict?: boolean; source?: string } = {}): void {
    const strict = opts.strict ?? true;
    const where = opts.source ? ` from ${opts.source}` : "";
    const own = this.namedParameters();
    const ownNames = new Set(own.map(([n]) => n));
    const problems: string[] = [];
    const assignments: [Variable, Tensor][] = [];
    for (const [name, v] of own) {
      const t = sd.get(name);
      if (!t) {
        if (strict) problems.push(`missing tensor '${name}' (expected shape ${fmtShape(v.shape)})`);
        continue;
      }
      if (t.shape.length !== v.shape.length || t.shape.some((d, i) => d !== v.shape[i])) {
        problems.push(
          `shape mismatch for '${name}': expected ${fmtShape(v.shape)}, found ${fmtShape(t.shape)}${where}`,
        );
        continue;
      }
      assignments.push([v, t]);
    }
    if (strict) {
      for (const [name, t] of sd) {
        if (!ownNames.has(name))
          problems.push(`unexpected tensor '${name}' (found shape ${fmtShape(t.shape)})`);
      }
    }
    if (problems.length > 0) {
      const head = `loadStateDict${where} into ${this.constructor.name}: ${problems.length} problem(s)`;
      const shown = problems.slice(0, 20);
      const more = problems.length > shown.length ? `\n  ... and ${problems.length - shown.length} more` : "";
      throw new Error(`${head}\n  ${shown.join("\n  ")}${more}`);
    }
    for (const [v, t] of assignments) {
      if (t.dtype === v.dtype) v.assign(t);
      else {
        const c = tf.cast(t, v.dtype);
        v.assign(c);
        c.dispose();
      }
    }
  }

  dispose(): void {
    for (const e of this.entries) {
      if (e.kind === "param") e.v.dispose();
      else e.m.dispose();
    }
  }
}

export class ModuleList extends Module {
  readonly items: Module[];

  constructor(items: Module[]) {
    super();
    this.items = items.map((m, i) => this.child(String(i), m));
  }
}

/**
 * Conv2d, NHWC. Weight [k, k, in, out] ~ N(0, 1/fan_in), fan_in = k·k·in (LeCun normal: unit-variance outputs for
 * unit-variance inputs, no dependence on torch's kaiming_uniform(a=√5) quirk); bias zeros.
 */
export class Conv2d extends Module {
  readonly weight: Variable;
  readonly bias: Variable | undefined;
  readonly stride: number;
  readonly padding: ConvPad;

  constructor(
    init: Init,
    inC: number,
    outC: number,
    kernel: number,
    opts: { stride?: number; padding?: ConvPad; bias?: boolean } = {},
  ) {
    super();
    this.stride = opts.stride ?? 1;
    this.padding = opts.padding ?? "same";
    this.weight = this.param(
      "weight",
      init.normal([kernel, kernel, inC, outC], 1 / Math.sqrt(kernel * kernel * inC)),
    );
    this.bias = (opts.bias ?? true) ? this.param("bias", init.zeros([outC])) : undefined;
  }

  forward(x: Tensor4D): Tensor4D {
    return tf.tidy(() => {
      const y = ops.conv2d(x, this.weight as Tensor4D, this.stride, this.padding);
      return this.bias ? tf.add(y, this.bias) : y;
    });
  }
}

/** Linear on the last axis. Weight [in, out] ~ N(0, 1/in), bias zeros. */
export class Linear extends Module {
  readonly weight: Variable;
  readonly bias: Variable | undefined;
  readonly inF: number;
  readonly outF: number;

  constructor(init: Init, inF: number, outF: number, opts: { bias?: boolean } = {}) {
    super();
    this.inF = inF;
    this.outF = outF;
    this.weight = this.param("weight", init.normal([inF, outF], 1 / Math.sqrt(inF)));
    this.bias = (opts.bias ?? true) ? this.param("bias", init.zeros([outF])) : undefined;
  }

  forward(x: Tensor): Tensor {
    const last = x.shape[x.rank - 1];
    if (last !== this.inF)
      throw new Error(`Linear: expected last dim ${this.inF}, got shape ${fmtShape(x.shape)}`);
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      let y: Tensor = tf.matMul(tf.reshape(x, [-1, this.inF]) as Tensor2D, this.weight as Tensor2D);
      if (this.bias) y = tf.add(y, this.bias);
      return tf.reshape(y, [...lead, this.outF]);
    });
  }
}

/** GroupNorm over channels-last [B, H, W, C] or [B, T, C]; statistics in float32 per (batch, group). */
export class GroupNorm extends Module {
  readonly weight: Variable;
  readonly bias: Variable;
  readonly groups: number;
  readonly channels: number;
  readonly eps: number;

  constructor(groups: number, channels: number, eps = 1e-5) {
    super();
    if (channels % groups !== 0)
      throw new Error(`GroupNorm: ${channels} channels not divisible by ${groups} groups`);
    this.groups = groups;
    this.channels = channels;
    this.eps = eps;
    this.weight = this.param("weight", tf.ones([channels]));
    this.bias = this.param("bias", tf.zeros([channels]));
  }

  forward(x: Tensor4D): Tensor4D;
  forward(x: Tensor3D): Tensor3D;
  forward(x: Tensor3D | Tensor4D): Tensor3D | Tensor4D {
    const c = x.shape[x.rank - 1]!;
    if (c !== this.channels)
      throw new Error(`GroupNorm: expected ${this.channels} channels, got ${fmtShape(x.shape)}`);
    return tf.tidy(() => {
      // Statistics by batched matMul with a ones row: wasm reduces non-innermost axes through a transpose, which
      // made tf.moments cost as much as the 3x3 conv that follows (20 ms vs 12 ms on [8,32,32,64]).
      const b = x.shape[0];
      const g = this.groups;
      const n = x.size / (b * c);
      const flat = tf.reshape(x, [b, n, c]);
      const ones = tf.fill([b, 1, n], 1 / (n * (c / g)));
      const groupMean = (t: Tensor) => tf.sum(tf.reshape(tf.matMul(ones, t), [b, 1, g, c / g]), 3, true);
      const perChannel = (t: Tensor) => tf.reshape(tf.broadcastTo(t, [b, 1, g, c / g]), [b, 1, c]);
      const xc = tf.sub(flat, perChannel(groupMean(flat)));
      const variance = groupMean(tf.square(xc));
      const scale = tf.mul(perChannel(tf.rsqrt(tf.add(variance, this.eps))), this.weight);
      return tf.reshape(tf.add(tf.mul(xc, scale), this.bias), x.shape) as Tensor3D | Tensor4D;
    });
  }
}

/** LayerNorm over the last axis. */
export class LayerNorm extends Module {
  readonly weight: Variable;
  readonly bias: Variable;
  readonly eps: number;

  constructor(dim: number, eps = 1e-5) {
    super();
    this.eps = eps;
    this.weight = this.param("weight", tf.ones([dim]));
    this.bias = this.param("bias", tf.zeros([dim]));
  }

  forward(x: Tensor): Tensor {
    return tf.tidy(() => {
      const { mean, variance } = tf.moments(x, -1, true);
      const xn = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, this.eps)));
      return tf.add(tf.mul(xn, this.weight), this.bias);
    });
  }
}

/** Token embedding table [n, dim] ~ N(0, std²); std defaults to 1 like torch.nn.Embedding (CLIP/GLIDE pass 0.02 etc.). */
export class Embedding extends Module {
  readonly weight: Variable;

  constructor(init: Init, n: number, dim: number, std = 1) {
    super();
    this.weight = this.param("weight", init.normal([n, dim], std));
  }

  forward(ids: Tensor): Tensor {
    return ops.embedding(this.weight as Tensor2D, ids);
  }
}

/**
 * Scaled dot-product attention. q [B,H,Tq,d], k/v [B,H,Tk,d]; q and k are each scaled by d^-1/4 before the
 * product (as OpenAI's QKVAttention does, which keeps the logits' magnitude down in low precision); optional
 * additive bias broadcastable to [B,H,Tq,Tk]; softmax over keys in float32.
 */
export function attention(q: Tensor4D, k: Tensor4D, v: Tensor4D, bias?: Tensor): Tensor4D {
  return tf.tidy(() => {
    const d = q.shape[3];
    const scale = 1 / Math.sqrt(Math.sqrt(d));
    let w: Tensor = tf.matMul(tf.mul(q, scale) as Tensor4D, tf.mul(k, scale) as Tensor4D, false, true);
    if (w.dtype !== "float32") w = tf.cast(w, "float32");
    if (bias) w = tf.add(w, bias);
    const p = tf.softmax(w, -1);
    return tf.matMul(tf.cast(p, v.dtype) as Tensor4D, v) as Tensor4D;
  });
}

/**
 * Sinusoidal timestep embedding as in OpenAI's guided-diffusion/GLIDE: half = floor(dim/2),
 * freqs_i = exp(-ln(maxPeriod)·i/half), output [cos(t·f), sin(t·f)] (cos first), plus a zero column if dim is odd.
 */
export function timestepEmbedding(t: Tensor1D, dim: number, maxPeriod = 10000): Tensor2D {
  const half = Math.floor(dim / 2);
  // Frequencies formed op by op in float32, as the reference does (see expf32.ts).
  const negLog = Math.fround(-Math.log(maxPeriod));
  const freqs = Float32Array.from({ length: half }, (_, i) =>
    expf32(Math.fround(Math.fround(negLog * i) / half)),
  );
  return tf.tidy(() => {
    const args = tf.mul(tf.reshape(tf.cast(t, "float32"), [-1, 1]), tf.tensor2d(freqs, [1, half]));
    const parts: Tensor2D[] = [tf.cos(args) as Tensor2D, tf.sin(args) as Tensor2D];
    if (dim % 2) parts.push(tf.zeros([t.shape[0], 1]));
    return tf.concat(parts, 1);
  });
}

/**
 * Splits fused projections [B, ..., parts·heads·ch] into `parts` tensors [B, heads, T, ch] (T = the middle dims).
 * `perHead` is the legacy layout (per head, the parts are consecutive blocks of ch); otherwise the parts come first
 * over all channels, then heads. Written with split + 4-D transposes: wasm's generic 5-D transpose cost as much as
 * the largest convolution of a small UNet.
 */
export function splitHeads(x: Tensor, heads: number, parts: number, perHead: boolean): Tensor4D[] {
  const b = x.shape[0]!;
  const c = x.shape[x.rank - 1]!;
  const t = x.size / (b * c);
  const ch = c / (heads * parts);
  return tf.tidy(() => {
    const pieces = perHead
      ? tf.split(tf.reshape(x, [b, t, heads, parts * ch]), parts, 3)
      : tf.split(tf.reshape(x, [b, t, c]), parts, 2).map((p) => tf.reshape(p, [b, t, heads, ch]));
    return pieces.map((p) => tf.transpose(p, [0, 2, 1, 3]) as Tensor4D);
  });
}
