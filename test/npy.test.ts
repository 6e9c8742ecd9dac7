import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { encodeNpy, npyToNumbers, parseNpy, readNpy, writeNpy } from "../src/core/npy.ts";

const dir = mkdtempSync(join(tmpdir(), "npy-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A .npy file with an arbitrary header dict and payload, as NumPy would write it. */
function build(header: string, payload: Uint8Array, version = 1): Uint8Array {
  const pre = version === 1 ? 10 : 12;
  let h = header;
  h += " ".repeat((64 - ((pre + h.length + 1) % 64)) % 64);
  h += "\n";
  const out = new Uint8Array(pre + h.length + payload.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const dv = new DataView(out.buffer);
  if (version === 1) dv.setUint16(8, h.length, true);
  else dv.setUint32(8, h.length, true);
  out.set(new TextEncoder().encode(h), pre);
  out.set(payload, pre + h.length);
  return out;
}

describe("npy", () => {
  test("float32 round trip through a file", () => {
    const data = Float32Array.from({ length: 24 }, (_, i) => i * 0.5 - 3);
    const path = join(dir, "a.npy");
    writeNpy(path, data, [2, 3, 4]);
    const back = readNpy(path);
    assert.equal(back.dtype, "float32");
    assert.deepEqual(back.shape, [2, 3, 4]);
    assert.deepEqual(back.data, data);
    assert.deepEqual(parseNpy(encodeNpy(Float32Array.of(7), [1])).shape, [1]);
    assert.deepEqual(parseNpy(encodeNpy(Float32Array.of(7), [])).shape, []);
  });

  test("dtypes and header versions", () => {
    const f64 = new Uint8Array(Float64Array.of(1.5, -2).buffer);
    const a = parseNpy(build("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", f64, 2));
    assert.deepEqual(Array.from(a.data as Float64Array), [1.5, -2]);
    const i64 = new Uint8Array(BigInt64Array.of(5n, -7n, 999n).buffer);
    const b = parseNpy(build("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", i64, 3));
    assert.deepEqual(npyToNumbers(b), [5, -7, 999]);
    const i32 = new Uint8Array(Int32Array.of(-1, 2).buffer);
    assert.deepEqual(
      npyToNumbers(parseNpy(build("{'descr': '<i4', 'fortran_order': False, 'shape': (1, 2), }", i32))),
      [-1, 2],
    );
    const u8 = parseNpy(
      build("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", Uint8Array.of(0, 255, 7)),
    );
    assert.deepEqual(npyToNumbers(u8), [0, 255, 7]);
    const bool = parseNpy(
      build("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", Uint8Array.of(1, 0)),
    );
    assert.equal(bool.dtype, "bool");
  });

  test("clear one-line errors naming the file", () => {
    const good = encodeNpy(Float32Array.from({ length: 6 }), [2, 3]);
    const truncated = join(dir, "truncated.npy");
    writeFileSync(truncated, good.subarray(0, good.length - 5));
    assert.throws(
      () => readNpy(truncated),
      /truncated\.npy: truncated data: shape \[2, 3\] × float32 \(4 B\) needs 24 bytes, found 19/,
    );
    const tiny = join(dir, "tiny.npy");
    writeFileSync(tiny, good.subarray(0, 4));
    assert.throws(() => readNpy(tiny), /tiny\.npy: truncated \.npy file/);
    const header = join(dir, "header.npy");
    writeFileSync(header, good.subarray(0, 40));
    assert.throws(() => readNpy(header), /header\.npy: truncated \.npy file \(header claims/);
    const magic = join(dir, "magic.npy");
    writeFileSync(magic, Buffer.from("PK\x03\x04 not numpy at all"));
    assert.throws(() => readNpy(magic), /magic\.npy: bad magic/);
    assert.throws(() => readNpy(join(dir, "missing.npy")), /missing\.npy: cannot read \(file not found\)/);
    const f = build("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", new Uint8Array(16));
    assert.throws(() => parseNpy(f, "f.npy"), /f\.npy: Fortran-order arrays are not supported/);
    const c = build("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", new Uint8Array(8));
    assert.throws(() => parseNpy(c, "c.npy"), /c\.npy: unsupported dtype '<c8'/);
    const be = build("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", new Uint8Array(4));
    assert.throws(() => parseNpy(be, "be.npy"), /unsupported dtype '>f4'/);
    const long = build("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", new Uint8Array(8));
    assert.throws(() => parseNpy(long, "long.npy"), /long\.npy: oversized data/);
    for (const bad of [truncated, tiny, header, magic]) {
      try {
        readNpy(bad);
      } catch (err) {
        assert.equal((err as Error).message.includes("\n"), false);
      }
    }
  });
});
