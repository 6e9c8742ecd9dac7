import assert from "node:assert/strict";
import { before, test } from "node:test";
import { initEngine, type Tensor, tf } from "../src/core/engine.ts";
import { Init } from "../src/core/layers.ts";
import { setWasmMatMul, wasmMatMulMode } from "../src/core/wasm-matmul.ts";

before(async () => {
  await initEngine("wasm", { quiet: true, matMul: "fast" });
});

/** out[..., i, j] = Σ_k A[..., i, k]·B[..., k, j] by direct loops (A, B already in plain orientation). */
function refMatMul(
  a: Float32Array,
  b: Float32Array,
  batch: [number, number],
  m: number,
  k: number,
  n: number,
) {
  const [ba, bb] = batch;
  const bo = Math.max(ba, bb);
  const out = new Float32Array(bo * m * n);
  for (let p = 0; p < bo; p++) {
    const ao = (ba === 1 ? 0 : p) * m * k;
    const bo2 = (bb === 1 ? 0 : p) * k * n;
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let q = 0; q < k; q++) s += a[ao + i * k + q]! * b[bo2 + q * n + j]!;
        out[(p * m + i) * n + j] = s;
      }
  }
  return out;
}

/** [rows, cols] matrices of a batch, stored transposed as [cols, rows] when `t`. */
function stored(data: Float32Array, batch: number, rows: number, cols: number, t: boolean): Float32Array {
  if (!t) return data;
  const out = new Float32Array(data.length);
  for (let p = 0; p < batch; p++)
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < cols; j++)
        out[p * rows * cols + j * rows + i] = data[p * rows * cols + i * cols + j]!;
  return out;
}

test("wasm matMul equals direct loops for every transpose pair, batch layout and row count", () => {
  const init = new Init(3);
  // [outer dims of A, of B, m, k, n]: single matrices, a batch against one matrix (both ways), batch against batch
  // above and below the rows threshold of the per-matrix path, and rank-4 attention-like batches.
  const cases: [number[], number[], number, number, number][] = [
    [[], [], 5, 7, 3],
    [[4], [], 9, 6, 5],
    [[], [3], 10, 4, 6],
    [[6], [6], 12, 5, 7],
    [[6], [6], 1, 33, 9],
    [[2, 3], [2, 3], 16, 8, 11],
    [[1], [4], 9, 3, 2],
    [[1, 1], [3], 9, 4, 5],
  ];
  const before = tf.memory().numTensors;
  for (const [oa, ob, m, k, n] of cases) {
    const ba = oa.reduce((x, y) => x * y, 1);
    const bb = ob.reduce((x, y) => x * y, 1);
    const [a, b] = [ba * m * k, bb * k * n].map((len) => {
      const t = init.normal([len], 1);
      const v = t.dataSync() as Float32Array;
      t.dispose();
      return v;
    }) as [Float32Array, Float32Array];
    const want = refMatMul(a, b, [ba, bb], m, k, n);
    for (const ta of [false, true])
      for (const tb of [false, true]) {
        const at = tf.tensor(stored(a, ba, m, k, ta), [...oa, ...(ta ? [k, m] : [m, k])]);
        const bt = tf.tensor(stored(b, bb, k, n, tb), [...ob, ...(tb ? [n, k] : [k, n])]);
        const y = tf.matMul(at, bt, ta, tb);
        const rank = Math.max(oa.length, ob.length);
        const pad = (o: number[]) => [...Array(rank - o.length).fill(1), ...o];
        const outer = pad(oa).map((d, i) => Math.max(d, pad(ob)[i]!));
        assert.deepEqual(y.shape, [...outer, m, n], `shape of ${oa}|${ob} ${m}x${k}x${n} tA=${ta} tB=${tb}`);
        const got = y.dataSync();
        let worst = 0;
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
        assert.ok(worst < 1e-4, `${oa}|${ob} ${m}x${k}x${n} tA=${ta} tB=${tb}: max error ${worst}`);
        tf.dispose([at, bt, y]);
      }
  }
  assert.equal(tf.memory().numTensors, before, "matMul leaked tensors");
});

test("wasm matMul gradients (transposed products) match the cpu backend", async () => {
  const init = new Init(5);
  const a = init.normal([2, 3, 12, 8], 1);
  const b = init.normal([2, 3, 10, 8], 1);
  const r = init.normal([2, 3, 12, 10], 1);
  const values = [a, b, r].map((t) => ({ data: t.dataSync().slice(), shape: t.shape }));
  const run = () =>
    tf.tidy(() => {
      const [x, y, z] = values.map((v) => tf.tensor(v.data, v.shape));
      const g = tf.grads((p: Tensor, q: Tensor) => tf.sum(tf.mul(tf.matMul(p, q, false, true), z!)))([
        x!,
        y!,
      ]);
      return g.map((t) => t.dataSync().slice());
    });
  const onWasm = run();
  tf.dispose([a, b, r]);
  await tf.setBackend("cpu");
  try {
    const onCpu = run();
    onCpu.forEach((g, i) => {
      let worst = 0;
      g.forEach((v, j) => {
        worst = Math.max(worst, Math.abs(v - onWasm[i]![j]!));
      });
      assert.ok(worst < 1e-4, `gradient ${i}: wasm and cpu differ by ${worst}`);
    });
  } finally {
    await tf.setBackend("wasm");
  }
});

test("the kernel can be switched back to the stock one and again to the fast one", () => {
  assert.equal(wasmMatMulMode(), "fast", "initEngine(matMul: fast) installs it");
  const a = tf.ones([2, 12, 8]);
  const b = tf.ones([2, 8, 4]);
  try {
    for (const mode of ["reference", "fast", "reference", "fast"] as const) {
      setWasmMatMul(mode);
      assert.equal(wasmMatMulMode(), mode, `mode ${mode}`);
      const y = tf.matMul(a, b);
      assert.ok(
        y.dataSync().every((v) => v === 8),
        `${mode}: all-ones product is 8 everywhere`,
      );
      y.dispose();
    }
  } finally {
    tf.dispose([a, b]);
  }
});
