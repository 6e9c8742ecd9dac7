// NumPy .npy reader (format versions 1–3) and a float32 writer. Reference arrays come from NumPy, so errors must
// name the file and say what was expected: a verifier row is only useful if it tells which golden file is bad.
import { readFileSync, writeFileSync } from "node:fs";

export type NpyDtype = "float32" | "float64" | "int64" | "int32" | "uint8" | "bool";
export type NpyData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  /** C-order elements; bool is stored as Uint8Array of 0/1. */
  data: NpyData;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** Little-endian (or byte-order-free) descrs only: big-endian data would need swapping and never occurs here. */
const DESCRS: Record<string, { dtype: NpyDtype; size: number }> = {
  "<f4": { dtype: "float32", size: 4 },
  "<f8": { dtype: "float64", size: 8 },
  "<i8": { dtype: "int64", size: 8 },
  "<i4": { dtype: "int32", size: 4 },
  "|u1": { dtype: "uint8", size: 1 },
  "<u1": { dtype: "uint8", size: 1 },
  "|b1": { dtype: "bool", size: 1 },
};

function fail(name: string, what: string): never {
  throw new Error(`${name}: ${what}`);
}

/** Parses the header dict, a Python literal such as {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }. */
function parseHeader(text: string, name: string): { descr: string; fortran: boolean; shape: number[] } {
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(text)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(text)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(text)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    fail(
      name,
      `malformed .npy header (expected 'descr', 'fortran_order' and 'shape'): ${text.trim().slice(0, 120)}`,
    );
  }
  const shape = shapeText
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((s) => {
      const n = Number(s.replace(/L$/, ""));
      if (!Number.isInteger(n) || n < 0) fail(name, `malformed .npy shape (${shapeText})`);
      return n;
    });
  return { descr, fortran: fortran === "True", shape };
}

/** Parses .npy bytes; `name` (usually the path) prefixes every error. */
export function parseNpy(buf: Uint8Array, name = "<npy buffer>"): NpyArray {
  if (buf.length < 10)
    fail(name, `truncated .npy file (${buf.length} bytes, need at least 10 for the preamble)`);
  for (let i = 0; i < MAGIC.length; i++) {
    if (buf[i] !== MAGIC[i]) fail(name, "bad magic: not a NumPy .npy file (expected \\x93NUMPY)");
  }
  const major = buf[6]!;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (buf.length < 12) fail(name, "truncated .npy file (preamble cut short)");
    headerLen = view.getUint32(8, true);
    headerStart = 12;
  } else {
    fail(name, `unsupported .npy format version ${major}.${buf[7]} (expected 1, 2 or 3)`);
  }
  const dataStart = headerStart + headerLen;
  if (dataStart > buf.length) {
    fail(
      name,
      `truncated .npy file (header claims ${headerLen} bytes, only ${buf.length - headerStart} present)`,
    );
  }
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(
    buf.subarray(headerStart, dataStart),
  );
  const { descr, fortran, shape } = parseHeader(header, name);
  const kind = DESCRS[descr];
  if (!kind) {
    fail(name, `unsupported dtype '${descr}' (expected one of ${Object.keys(DESCRS).join(", ")})`);
  }
  if (fortran) fail(name, "Fortran-order arrays are not supported (expected C order)");
  const count = shape.reduce((a, b) => a * b, 1);
  const expected = count * kind.size;
  const actual = buf.length - dataStart;
  if (actual !== expected) {
    fail(
      name,
      `${actual < expected ? "truncated" : "oversized"} data: shape [${shape.join(", ")}] × ${kind.dtype} (${kind.size} B) needs ${expected} bytes, found ${actual}`,
    );
  }
  // Copy so the typed array is aligned whatever the header length.
  // (Buffer.slice would share the pooled buffer, so copy through a fresh Uint8Array.)
  const copy = new Uint8Array(expected);
  copy.set(buf.subarray(dataStart, dataStart + expected));
  const bytes = copy.buffer;
  let data: NpyData;
  switch (kind.dtype) {
    case "float32":
      data = new Float32Array(bytes);
      break;
    case "float64":
      data = new Float64Array(bytes);
      break;
    case "int64":
      data = new BigInt64Array(bytes);
      break;
    case "int32":
      data = new Int32Array(bytes);
      break;
    default:
      data = new Uint8Array(bytes);
  }
  return { dtype: kind.dtype, shape, data };
}

export function readNpy(path: string): NpyArray {
  let buf: Uint8Array;
  try {
    buf = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${path}: cannot read (${code === "ENOENT" ? "file not found" : (code ?? String(err))})`);
  }
  return parseNpy(buf, path);
}

/** Elements as float32 (int64 values beyond 2^24 lose precision, which never matters for the arrays read here). */
export function npyToFloat32(a: NpyArray): Float32Array {
  if (a.data instanceof Float32Array) return a.data;
  if (a.data instanceof BigInt64Array) return Float32Array.from(a.data, (v) => Number(v));
  return Float32Array.from(a.data);
}

/** Elements as JS numbers (exact for float64 and for int64 within ±2^53). */
export function npyToNumbers(a: NpyArray): number[] {
  if (a.data instanceof BigInt64Array) return Array.from(a.data, (v) => Number(v));
  return Array.from(a.data);
}

/** Encodes a float32 C-order array as .npy version 1 (header padded so the data starts 64-byte aligned). */
export function encodeNpy(data: Float32Array, shape: readonly number[]): Uint8Array {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length)
    throw new Error(`encodeNpy: shape [${shape.join(", ")}] has ${count} elements, data ${data.length}`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header = `${header}${" ".repeat(pad % 64)}\n`;
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  return out;
}

export function writeNpy(path: string, data: Float32Array, shape: readonly number[]): void {
  writeFileSync(path, encodeNpy(data, shape));
}
