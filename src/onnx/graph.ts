// A tiny ONNX graph builder: float initializers (from tf tensors or arrays), nodes, typed inputs/outputs, opset 17,
// serialised to ModelProto bytes by a hand-written protobuf encoder (the handful of ONNX messages needed here), so
// no protobuf dependency is required.
import type { Tensor } from "../core/engine.ts";

export const OPSET = 17;
const IR_VERSION = 8;

/** ONNX TensorProto.DataType values used here. */
export const DType = { float: 1, int32: 6, int64: 7, bool: 9, float16: 10 } as const;
export type DTypeName = keyof typeof DType;

export type AttrValue = number | number[] | string | { floats: number[] } | { float: number };

// ---------------------------------------------------------------------------------------------------------------
// Protobuf writer.

class Writer {
  private chunks: Uint8Array[] = [];
  private len = 0;

  private push(b: Uint8Array): void {
    this.chunks.push(b);
    this.len += b.length;
  }

  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    const out: number[] = [];
    while (x >= 0x80n) {
      out.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    out.push(Number(x));
    this.push(Uint8Array.from(out));
  }

  private tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  int(field: number, v: number): void {
    this.tag(field, 0);
    this.varint(v);
  }

  float(field: number, v: number): void {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.push(b);
  }

  bytes(field: number, b: Uint8Array): void {
    this.tag(field, 2);
    this.varint(b.length);
    this.push(b);
  }

  string(field: number, s: string): void {
    this.bytes(field, new TextEncoder().encode(s));
  }

  /**
   * A nested message: its chunks are adopted rather than copied, so a model's weights are copied once, by the
   * final `finish` (the full GLIDE base holds 1.5 GB of them).
   */
  message(field: number, build: (w: Writer) => void): void {
    const w = new Writer();
    build(w);
    this.tag(field, 2);
    this.varint(w.len);
    for (const c of w.chunks) this.push(c);
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.len);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Graph.

interface Initializer {
  name: string;
  dims: number[];
  dtype: DTypeName;
  raw: Uint8Array;
}

interface NodeDef {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
}

interface ValueInfo {
  name: string;
  dtype: DTypeName;
  dims: (number | string)[];
}

export class Graph {
  private readonly inits: Initializer[] = [];
  private readonly nodes: NodeDef[] = [];
  private readonly inputs: ValueInfo[] = [];
  private readonly outputs: ValueInfo[] = [];
  private readonly used = new Set<string>();
  private counter = 0;

  /** A fresh value name with the given prefix. */
  fresh(prefix: string): string {
    let n = `${prefix}_${this.counter++}`;
    while (this.used.has(n)) n = `${prefix}_${this.counter++}`;
    this.used.add(n);
    return n;
  }

  input(name: string, dtype: DTypeName, dims: (number | string)[]): string {
    this.used.add(name);
    this.inputs.push({ name, dtype, dims });
    return name;
  }

  output(name: string, dtype: DTypeName, dims: (number | string)[]): void {
    this.outputs.push({ name, dtype, dims });
  }

  /** Float initializer from a typed array. */
  floats(prefix: string, data: Float32Array | number[], dims: number[]): string {
    const f = data instanceof Float32Array ? data : Float32Array.from(data);
    const name = this.fresh(prefix);
    this.inits.push({
      name,
      dims,
      dtype: "float",
      raw: new Uint8Array(f.buffer.slice(f.byteOffset, f.byteOffset + f.byteLength)),
    });
    return name;
  }

  int64s(prefix: string, data: number[], dims: number[] = [data.length]): string {
    const b = new BigInt64Array(data.map((v) => BigInt(v)));
    const name = this.fresh(prefix);
    this.inits.push({ name, dims, dtype: "int64", raw: new Uint8Array(b.buffer) });
    return name;
  }

  /** Initializer of any supported dtype (tfjs names: bool values as 0/1). */
  constant(
    prefix: string,
    dtype: "float32" | "int32" | "bool",
    data: ArrayLike<number>,
    dims: number[],
  ): string {
    if (dtype === "float32") return this.floats(prefix, Float32Array.from(data), dims);
    const arr = dtype === "int32" ? Int32Array.from(data) : Uint8Array.from(data, (v) => (v ? 1 : 0));
    const name = this.fresh(prefix);
    this.inits.push({
      name,
      dims,
      dtype: dtype === "int32" ? "int32" : "bool",
      raw: new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength),
    });
    return name;
  }

  scalar(prefix: string, v: number): string {
    return this.floats(prefix, [v], []);
  }

  /** Initializer holding a tf tensor's current (float32) values, optionally reshaped/permuted on the JS side. */
  tensor(prefix: string, t: Tensor, perm?: number[]): string {
    const data = t.dataSync() as Float32Array;
    if (!perm) return this.floats(prefix, Float32Array.from(data), [...t.shape]);
    const [out, dims] = permute(data, t.shape, perm);
    return this.floats(prefix, out, dims);
  }

  /** Adds a node; returns its single output name (or use `nodeN` for several outputs). */
  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, prefix = op): string {
    const out = this.fresh(prefix);
    this.nodes.push({ op, inputs, outputs: [out], attrs });
    return out;
  }

  nodeN(op: string, inputs: string[], n: number, attrs: Record<string, AttrValue> = {}): string[] {
    const outs = Array.from({ length: n }, () => this.fresh(op));
    this.nodes.push({ op, inputs, outputs: outs, attrs });
    return outs;
  }

  /** Renames the final value by an Identity node so graph outputs have stable names. */
  identity(input: string, name: string): string {
    this.used.add(name);
    this.nodes.push({ op: "Identity", inputs: [input], outputs: [name], attrs: {} });
    return name;
  }

  /**
   * ModelProto bytes. `halfExact`: float initializers whose every value is exactly a float16 (weights loaded from
   * float16 files) are stored as float16 and Cast back to float32 in the graph: the same float32 values at half the
   * bytes (the browser explorer ships its models this way).
   */
  serialize(opts: { halfExact?: boolean } = {}): Uint8Array {
    const casts: NodeDef[] = [];
    const inits = this.inits.map((i) => {
      if (!opts.halfExact || i.dtype !== "float" || i.raw.length < 256) return i;
      const half = halfExactBytes(i.raw);
      if (!half) return i;
      casts.push({ op: "Cast", inputs: [`${i.name}_f16`], outputs: [i.name], attrs: { to: DType.float } });
      return { name: `${i.name}_f16`, dims: i.dims, dtype: "float16" as const, raw: half };
    });
    const w = new Writer();
    w.int(1, IR_VERSION);
    w.string(2, "guidance-lab");
    w.message(7, (g) => {
      for (const n of [...casts, ...this.nodes]) g.message(1, (m) => writeNode(m, n));
      g.string(2, "guidance-lab");
      for (const i of inits) g.message(5, (m) => writeInit(m, i));
      for (const v of this.inputs) g.message(11, (m) => writeValueInfo(m, v));
      for (const v of this.outputs) g.message(12, (m) => writeValueInfo(m, v));
    });
    w.message(8, (o) => {
      o.string(1, "");
      o.int(2, OPSET);
    });
    return w.finish();
  }
}

/** IEEE binary16 bits of a float32 when it is exactly representable (zero, normal or subnormal), else undefined. */
export function halfBitsExact(v: number): number | undefined {
  const bits = new Uint32Array(new Float32Array([v]).buffer)[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const man = bits & 0x7fffff;
  if (exp === 0 && man === 0) return sign;
  if (exp === 0xff || exp === 0) return undefined;
  const e = exp - 127;
  if (e >= -14 && e <= 15) return man & 0x1fff ? undefined : sign | ((e + 15) << 10) | (man >>> 13);
  if (e < -24 || e > 15) return undefined;
  // A half subnormal is m·2^-24; the float32 is (2^23 + man)·2^(e-23), so m = (2^23 + man) >> (-e - 1), exactly.
  const full = man | 0x800000;
  const shift = -e - 1;
  return full & ((1 << shift) - 1) ? undefined : sign | (full >>> shift);
}

/** A float32 initializer's bytes as float16 bytes when every value converts exactly, else undefined. */
function halfExactBytes(raw: Uint8Array): Uint8Array | undefined {
  const f = new Float32Array(raw.slice().buffer);
  const h = new Uint16Array(f.length);
  for (let i = 0; i < f.length; i++) {
    const b = halfBitsExact(f[i]!);
    if (b === undefined) return undefined;
    h[i] = b;
  }
  return new Uint8Array(h.buffer);
}

function writeNode(w: Writer, n: NodeDef): void {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(4, n.op);
  for (const [name, v] of Object.entries(n.attrs)) {
    w.message(5, (a) => {
      a.string(1, name);
      if (typeof v === "string") {
        a.bytes(4, new TextEncoder().encode(v));
        a.int(20, 3);
      } else if (typeof v === "number") {
        if (Number.isInteger(v)) {
          a.int(3, v);
          a.int(20, 2);
        } else {
          a.float(2, v);
          a.int(20, 1);
        }
      } else if (Array.isArray(v)) {
        for (const x of v) a.int(8, x);
        a.int(20, 7);
      } else if ("floats" in v) {
        for (const x of v.floats) a.float(7, x);
        a.int(20, 6);
      } else {
        a.float(2, v.float);
        a.int(20, 1);
      }
    });
  }
}

function writeInit(w: Writer, i: Initializer): void {
  for (const d of i.dims) w.int(1, d);
  w.int(2, DType[i.dtype]);
  w.string(8, i.name);
  w.bytes(9, i.raw);
}

function writeValueInfo(w: Writer, v: ValueInfo): void {
  w.string(1, v.name);
  w.message(2, (t) =>
    t.message(1, (tt) => {
      tt.int(1, DType[v.dtype]);
      tt.message(2, (s) => {
        for (const d of v.dims)
          s.message(1, (dm) => (typeof d === "number" ? dm.int(1, d) : dm.string(2, d)));
      });
    }),
  );
}

/** Generic permutation of a row-major array (used to lay conv filters out as OIHW). */
export function permute(
  data: Float32Array,
  shape: readonly number[],
  perm: number[],
): [Float32Array, number[]] {
  const r = shape.length;
  const dims = perm.map((p) => shape[p]!);
  const inStrides = new Array<number>(r).fill(1);
  for (let i = r - 2; i >= 0; i--) inStrides[i] = inStrides[i + 1]! * shape[i + 1]!;
  const out = new Float32Array(data.length);
  const idx = new Array<number>(r).fill(0);
  for (let o = 0; o < data.length; o++) {
    let src = 0;
    for (let a = 0; a < r; a++) src += idx[a]! * inStrides[perm[a]!]!;
    out[o] = data[src]!;
    for (let a = r - 1; a >= 0; a--) {
      idx[a] = idx[a]! + 1;
      if (idx[a]! < dims[a]!) break;
      idx[a] = 0;
    }
  }
  return [out, dims];
}
