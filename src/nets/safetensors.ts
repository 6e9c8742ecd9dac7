// safetensors reader and writer. The reader keeps only the header in memory and reads each tensor's bytes on demand
// at its offset, so a checkpoint is never held twice (file + converted arrays). Every header invariant is checked
// up front, because a truncated download otherwise surfaces as garbage weights far from the cause.
import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import type { Tensor } from "../core/engine.ts";

export type SafeDtype = "F32" | "F16" | "BF16" | "F64" | "I64" | "I32" | "U8" | "BOOL";

const DTYPE_SIZE: Record<SafeDtype, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I64: 8,
  I32: 4,
  U8: 1,
  BOOL: 1,
};

export interface TensorInfo {
  name: string;
  dtype: SafeDtype;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

export interface LoadedTensor {
  dtype: SafeDtype;
  shape: number[];
  /** Values as float32 whatever the stored dtype (integers beyond 2^24 lose precision). */
  data: Float32Array;
}

const halfTable = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * frac * 2 ** -24;
    else if (exp === 31) t[h] = frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
    else t[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return t;
})();

/** IEEE binary16 bits → float32 (exact). */
export function halfToFloat(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = halfTable[bits[i]!]!;
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → IEEE binary16 bits, round to nearest even, overflow to ±inf. */
export function floatToHalf(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i]!;
    const x = u32[0]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      const half = 1 << (shift - 1);
      let m = mant >>> shift;
      const rest = mant & ((1 << shift) - 1);
      if (rest > half || (rest === half && m & 1)) m++;
      out[i] = sign | m;
      continue;
    }
    const m = mant >>> 13;
    const rest = mant & 0x1fff;
    // A carry out of the mantissa correctly bumps the exponent (up to inf).
    let h = (e << 10) | m;
    if (rest > 0x1000 || (rest === 0x1000 && m & 1)) h++;
    out[i] = sign | h;
  }
  return out;
}

function isDtype(s: unknown): s is SafeDtype {
  return typeof s === "string" && s in DTYPE_SIZE;
}

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  private readonly infos: Map<string, TensorInfo>;
  private fd: number | undefined;

  /** Use readSafetensors(). */
  constructor(path: string, fd: number, metadata: Record<string, string>, infos: Map<string, TensorInfo>) {
    this.path = path;
    this.fd = fd;
    this.metadata = metadata;
    this.infos = infos;
  }

  names(): string[] {
    return [...this.infos.keys()];
  }

  has(name: string): boolean {
    return this.infos.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.infos.get(name);
    if (!info) throw new Error(`${this.path}: no tensor '${name}'`);
    return info;
  }

  /** The stored bytes of one tensor (read from disk now). */
  raw(name: string): Uint8Array {
    const info = this.info(name);
    if (this.fd === undefined) throw new Error(`${this.path}: file is closed (reading '${name}')`);
    const buf = new Uint8Array(info.end - info.begin);
    let done = 0;
    while (done < buf.length) {
      const n = readSync(this.fd, buf, done, buf.length - done, info.begin + done);
      if (n === 0) throw new Error(`${this.path}: tensor '${name}' is cut short by the end of the file`);
      done += n;
    }
    return buf;
  }

  /** One tensor converted to float32. */
  get(name: string): LoadedTensor {
    const info = this.info(name);
    const bytes = this.raw(name);
    const n = info.shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    switch (info.dtype) {
      case "F32":
        data = new Float32Array(bytes.buffer, 0, n);
        break;
      case "F16":
        data = halfToFloat(new Uint16Array(bytes.buffer, 0, n));
        break;
      case "BF16": {
        const src = new Uint16Array(bytes.buffer, 0, n);
        const bits = new Uint32Array(n);
        for (let i = 0; i < n; i++) bits[i] = src[i]! << 16;
        data = new Float32Array(bits.buffer);
        break;
      }
      case "F64":
        data = Float32Array.from(new Float64Array(bytes.buffer, 0, n));
        break;
      case "I64":
        data = Float32Array.from(new BigInt64Array(bytes.buffer, 0, n), (v) => Number(v));
        break;
      case "I32":
        data = Float32Array.from(new Int32Array(bytes.buffer, 0, n));
        break;
      default:
        data = Float32Array.from(bytes);
    }
    return { dtype: info.dtype, shape: [...info.shape], data };
  }

  /** Integer tensors without the float32 round trip. */
  getInt(name: string): Int32Array | BigInt64Array {
    const info = this.info(name);
    const bytes = this.raw(name);
    if (info.dtype === "I64") return new BigInt64Array(bytes.buffer);
    if (info.dtype === "I32") return new Int32Array(bytes.buffer);
    throw new Error(`${this.path}: tensor '${name}' is ${info.dtype}, expected I32 or I64`);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Opens and validates a .safetensors file; call close() when done. */
export function readSafetensors(path: string): SafetensorsFile {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${path}: cannot open (${code === "ENOENT" ? "file not found" : (code ?? String(err))})`);
  }
  try {
    const size = fstatSync(fd).size;
    const bad: (what: string) => never = (what) => {
      throw new Error(`${path}: ${what}`);
    };
    if (size < 8) bad(`truncated safetensors file (${size} bytes, need 8 for the header length)`);
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > size - 8)
      bad(`header length ${headerLen} exceeds the file (${size - 8} bytes after the length)`);
    const headerBuf = Buffer.alloc(headerLen);
    readSync(fd, headerBuf, 0, headerLen, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(headerBuf.toString("utf8"));
    } catch (err) {
      return bad(`header is not valid JSON (${(err as Error).message})`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header))
      bad("header is not a JSON object");
    const dataStart = 8 + headerLen;
    const dataSize = size - dataStart;
    const metadata: Record<string, string> = {};
    const infos: TensorInfo[] = [];
    for (const [name, entry] of Object.entries(header)) {
      if (name === "__metadata__") {
        for (const [k, v] of Object.entries((entry ?? {}) as Record<string, unknown>)) {
          if (typeof v !== "string") bad(`__metadata__['${k}'] is not a string`);
          metadata[k] = v;
        }
        continue;
      }
      const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (!isDtype(e?.dtype)) bad(`tensor '${name}': unknown dtype ${JSON.stringify(e?.dtype)}`);
      const shape = e.shape;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
        bad(`tensor '${name}': malformed shape ${JSON.stringify(shape)}`);
      }
      const off = e.data_offsets;
      if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isInteger(o) && o >= 0)) {
        bad(`tensor '${name}': malformed data_offsets ${JSON.stringify(off)}`);
      }
      const [b, en] = off as [number, number];
      if (b > en || en > dataSize) {
        bad(
          `tensor '${name}': data_offsets [${b}, ${en}] outside the data section (${dataSize} bytes; truncated file?)`,
        );
      }
      const dims = shape as number[];
      const expected = dims.reduce((a, d) => a * d, 1) * DTYPE_SIZE[e.dtype];
      if (expected !== en - b) {
        bad(
          `tensor '${name}': shape [${dims.join(", ")}] × ${e.dtype} needs ${expected} bytes, offsets span ${en - b}`,
        );
      }
      infos.push({ name, dtype: e.dtype, shape: dims, begin: dataStart + b, end: dataStart + en });
    }
    // The format requires the tensors to tile the data section exactly: no gaps, no overlaps, nothing after.
    const sorted = [...infos].sort((a, b) => a.begin - b.begin || a.end - b.end);
    let cursor = dataStart;
    for (const info of sorted) {
      if (info.begin < cursor) bad(`tensor '${info.name}' overlaps the previous tensor`);
      if (info.begin > cursor) bad(`gap of ${info.begin - cursor} bytes before tensor '${info.name}'`);
      cursor = info.end;
    }
    if (cursor !== size) bad(`${size - cursor} trailing bytes after the last tensor`);
    return new SafetensorsFile(path, fd, metadata, new Map(infos.map((i) => [i.name, i])));
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

export type WritableTensor = { data: Float32Array; shape: readonly number[] } | Tensor;

export interface WriteOptions {
  /** Storage dtype; F16 halves the size (values round to nearest even, beyond ±65504 become ±inf). */
  dtype?: "F32" | "F16";
  metadata?: Record<string, string>;
}

/** Writes named float tensors (host arrays or tfjs tensors) in order, streaming one tensor at a time. */
export function writeSafetensors(
  path: string,
  tensors: Record<string, WritableTensor>,
  opts: WriteOptions = {},
): void {
  const dtype = opts.dtype ?? "F32";
  const size = DTYPE_SIZE[dtype];
  const header: Record<string, unknown> = {};
  if (opts.metadata && Object.keys(opts.metadata).length > 0) header.__metadata__ = opts.metadata;
  const entries: { name: string; data: () => Float32Array; shape: number[] }[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (name === "__metadata__")
      throw new Error(`${path}: '__metadata__' is reserved and cannot name a tensor`);
    const isHost = "data" in t && (t as { data: unknown }).data instanceof Float32Array;
    const shape = [...t.shape];
    const n = shape.reduce((a, b) => a * b, 1);
    const data = isHost
      ? () => (t as { data: Float32Array }).data
      : () => (t as Tensor).dataSync() as Float32Array;
    if (isHost && (t as { data: Float32Array }).data.length !== n) {
      throw new Error(
        `${path}: tensor '${name}' has ${(t as { data: Float32Array }).data.length} values for shape [${shape.join(", ")}]`,
      );
    }
    header[name] = { dtype, shape, data_offsets: [offset, offset + n * size] };
    entries.push({ name, data, shape });
    offset += n * size;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  json += " ".repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const headerBytes = Buffer.from(json, "utf8");
  const fd = openSync(path, "w");
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(headerBytes.length));
    writeSync(fd, len);
    writeSync(fd, headerBytes);
    for (const e of entries) {
      const values = e.data();
      const bytes =
        dtype === "F16"
          ? new Uint8Array(floatToHalf(values).buffer)
          : new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    }
  } finally {
    closeSync(fd);
  }
}
