import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { backendFromEnv, initEngine, tf } from "../src/core/engine.ts";
import { floatToHalf, halfToFloat, readSafetensors, writeSafetensors } from "../src/nets/safetensors.ts";

const GOLDEN =
  process.env.GUIDANCE_LAB_GOLDEN ?? resolve(dirname(fileURLToPath(import.meta.url)), "../../shared/golden");
const weightsDir = join(GOLDEN, "weights");
const noWeights = existsSync(weightsDir)
  ? false
  : `golden weights not found at ${weightsDir} (set GUIDANCE_LAB_GOLDEN)`;

const dir = mkdtempSync(join(tmpdir(), "st-test-"));
before(async () => {
  await initEngine(backendFromEnv(), { quiet: true });
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A raw safetensors file from a header object and a data section. */
function raw(header: unknown, data: Uint8Array): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

describe("safetensors", () => {
  test("F32 round trip with metadata, host arrays and tensors", () => {
    const path = join(dir, "a.safetensors");
    const w = Float32Array.from({ length: 6 }, (_, i) => i / 3 - 1);
    const t = tf.tensor2d([1, 2, 3, 4], [2, 2]);
    writeSafetensors(path, { w: { data: w, shape: [2, 3] }, t }, { metadata: { step: "7" } });
    t.dispose();
    const f = readSafetensors(path);
    assert.deepEqual(f.names().sort(), ["t", "w"]);
    assert.deepEqual(f.metadata, { step: "7" });
    assert.deepEqual(f.get("w"), { dtype: "F32", shape: [2, 3], data: w });
    assert.deepEqual(Array.from(f.get("t").data), [1, 2, 3, 4]);
    assert.throws(() => f.get("nope"), /a\.safetensors: no tensor 'nope'/);
    f.close();
    // The data section starts 8-byte aligned, as the reference writer does.
    const bytes = readFileSync(path);
    assert.equal(Number(bytes.readBigUInt64LE(0)) % 8, 0);
  });

  test("F16 storage and conversions", () => {
    const values = Float32Array.of(0, -0, 1, -2.5, 65504, 2 ** -14, 2 ** -24, 0.1, 1e6);
    const back = halfToFloat(floatToHalf(values));
    assert.deepEqual(Array.from(back.slice(0, 7)), Array.from(values.slice(0, 7)));
    assert.equal(back[7], 0.0999755859375);
    assert.equal(back[8], Number.POSITIVE_INFINITY);
    // Ties round to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
    assert.equal(halfToFloat(floatToHalf([1 + 2 ** -11]))[0], 1);
    assert.equal(halfToFloat(floatToHalf([1 + 3 * 2 ** -11]))[0], 1 + 2 ** -9);
    const path = join(dir, "h.safetensors");
    writeSafetensors(path, { x: { data: Float32Array.of(0.5, -1.25, 3), shape: [3] } }, { dtype: "F16" });
    const f = readSafetensors(path);
    assert.equal(f.info("x").dtype, "F16");
    assert.deepEqual(Array.from(f.get("x").data), [0.5, -1.25, 3]);
    f.close();
  });

  test("BF16, I64 and I32 reading", () => {
    const bf = new Uint16Array([0x3f80, 0xc020]); // 1, -2.5
    const i64 = new BigInt64Array([3n, -4n]);
    const i32 = new Int32Array([9]);
    const data = Buffer.concat([Buffer.from(bf.buffer), Buffer.from(i64.buffer), Buffer.from(i32.buffer)]);
    const header = {
      a: { dtype: "BF16", shape: [2], data_offsets: [0, 4] },
      b: { dtype: "I64", shape: [2], data_offsets: [4, 20] },
      c: { dtype: "I32", shape: [1, 1], data_offsets: [20, 24] },
    };
    const path = join(dir, "mixed.safetensors");
    writeFileSync(path, raw(header, data));
    const f = readSafetensors(path);
    assert.deepEqual(Array.from(f.get("a").data), [1, -2.5]);
    assert.deepEqual(Array.from(f.get("b").data), [3, -4]);
    assert.deepEqual(f.getInt("b"), i64);
    assert.deepEqual(f.getInt("c"), Int32Array.of(9));
    f.close();
  });

  test("corrupted files give errors naming the file and the tensor", () => {
    const cases: [string, Buffer, RegExp][] = [
      ["short", Buffer.from([1, 2, 3]), /short\.safetensors: truncated safetensors file/],
      [
        "hlen",
        (() => {
          const b = Buffer.alloc(16);
          b.writeBigUInt64LE(1000n);
          return b;
        })(),
        /hlen\.safetensors: header length 1000 exceeds the file/,
      ],
      ["json", raw("x", new Uint8Array(0)).subarray(0, 10), /header length|not valid JSON/],
      [
        "dtype",
        raw({ a: { dtype: "Q8", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)),
        /tensor 'a': unknown dtype "Q8"/,
      ],
      [
        "range",
        raw({ a: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8)),
        /tensor 'a': data_offsets \[0, 16\] outside the data section \(8 bytes; truncated file\?\)/,
      ],
      [
        "size",
        raw({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
        /tensor 'a': shape \[3\] × F32 needs 12 bytes, offsets span 8/,
      ],
      [
        "overlap",
        raw(
          {
            a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
            b: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
          },
          new Uint8Array(8),
        ),
        /overlaps/,
      ],
      [
        "gap",
        raw({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)),
        /gap of 4 bytes before tensor 'a'/,
      ],
      [
        "trail",
        raw({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(8)),
        /4 trailing bytes/,
      ],
    ];
    for (const [name, bytes, re] of cases) {
      const path = join(dir, `${name}.safetensors`);
      writeFileSync(path, bytes);
      assert.throws(() => readSafetensors(path), re, name);
    }
    assert.throws(
      () => readSafetensors(join(dir, "none.safetensors")),
      /none\.safetensors: cannot open \(file not found\)/,
    );
    // A truncated copy of a valid file.
    const good = join(dir, "good.safetensors");
    writeSafetensors(good, { w: { data: new Float32Array(64), shape: [8, 8] } });
    const cut = join(dir, "cut.safetensors");
    writeFileSync(cut, readFileSync(good).subarray(0, readFileSync(good).length - 10));
    assert.throws(
      () => readSafetensors(cut),
      /cut\.safetensors: tensor 'w': data_offsets \[0, 256\] outside/,
    );
  });

  test("reads the golden F16 weights", { skip: noWeights }, () => {
    const file = readdirSync(weightsDir).find((f) => f.endsWith(".safetensors"));
    assert.ok(file, "no .safetensors in the weights folder");
    const f = readSafetensors(join(weightsDir, file));
    const names = f.names();
    assert.ok(names.length > 0, "no tensors");
    const t = f.get(names[0]!);
    assert.equal(
      t.data.length,
      t.shape.reduce((a, b) => a * b, 1),
    );
    assert.ok(t.data.every(Number.isFinite), "non-finite weights");
    f.close();
  });
});
