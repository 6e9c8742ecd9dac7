import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import type { Scalar, Tensor, Tensor1D, Tensor3D, Tensor4D } from "../src/core/engine.ts";
import { initEngine, tf } from "../src/core/engine.ts";
import {
  attention,
  avgPool2x,
  Conv2d,
  Embedding,
  GroupNorm,
  gelu,
  Init,
  LayerNorm,
  Linear,
  Module,
  ModuleList,
  silu,
  timestepEmbedding,
  upsampleNearest2x,
} from "../src/core/layers.ts";

const BACKENDS = ["wasm", "cpu"] as const;

before(async () => {
  await initEngine("wasm", { quiet: true });
});

/** A small UNet-ish block touching every layer: conv, GroupNorm, SiLU, stride-2 conv, upsample, attention, MLP. */
class Tiny extends Module {
  readonly inConv: Conv2d;
  readonly norm: GroupNorm;
  readonly down: Conv2d;
  readonly emb: Embedding;
  readonly ln: LayerNorm;
  readonly qkv: Linear;
  readonly blocks: ModuleList;
  readonly out: Conv2d;

  constructor(init: Init) {
    super();
    this.inConv = this.child("in_conv", new Conv2d(init, 2, 4, 3));
    this.norm = this.child("norm", new GroupNorm(2, 4));
    this.down = this.child("down", new Conv2d(init, 4, 4, 3, { stride: 2, padding: 1 }));
    this.emb = this.child("emb", new Embedding(init, 5, 4, 0.5));
    this.ln = this.child("ln", new LayerNorm(4));
    this.qkv = this.child("qkv", new Linear(init, 4, 12));
    this.blocks = this.child(
      "blocks",
      new ModuleList([new Linear(init, 4, 4), new Linear(init, 4, 4, { bias: false })]),
    );
    this.out = this.child("out", new Conv2d(init, 4, 2, 1, { bias: false }));
  }

  forward(x: Tensor4D, t: Tensor1D, ids: Tensor): Tensor4D {
    return tf.tidy(() => {
      const b = x.shape[0];
      let h = silu(this.norm.forward(this.inConv.forward(x)));
      h = tf.add(h, tf.reshape(timestepEmbedding(t, 4), [b, 1, 1, 4]));
      const d = this.down.forward(h); // [b, h/2, w/2, 4]
      const seq = tf.concat([tf.reshape(d, [b, -1, 4]), this.emb.forward(ids)], 1) as Tensor3D;
      const qkv = this.qkv.forward(this.ln.forward(seq));
      const [q, k, v] = tf
        .split(tf.reshape(qkv, [b, -1, 1, 12]), 3, 3)
        .map((z) => tf.transpose(z, [0, 2, 1, 3]));
      let a = tf.reshape(tf.transpose(attention(q as Tensor4D, k as Tensor4D, v as Tensor4D), [0, 2, 1, 3]), [
        b,
        -1,
        4,
      ]);
      a = (this.blocks.items[1] as Linear).forward(gelu((this.blocks.items[0] as Linear).forward(a)));
      const n = d.shape[1] * d.shape[2];
      const img = tf.reshape(tf.slice(a, [0, 0, 0], [b, n, 4]), d.shape) as Tensor4D;
      const up = upsampleNearest2x(tf.add(img, avgPool2x(h)) as Tensor4D);
      return this.out.forward(tf.add(up, h) as Tensor4D);
    });
  }
}

function arr(t: Tensor): number[] {
  return Array.from(t.dataSync());
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    assert.ok(
      Math.abs(a[i]! - b[i]!) <= tol * Math.max(1, Math.abs(b[i]!)),
      `${what}[${i}]: ${a[i]} vs ${b[i]}`,
    );
  }
}

test("Init is deterministic, advances, and has the requested statistics", () => {
  const a = new Init(42);
  const b = new Init(42);
  const x1 = arr(a.normal([1000], 2));
  assert.deepEqual(x1, arr(b.normal([1000], 2)));
  assert.notDeepEqual(x1, arr(a.normal([1000], 2)), "each call advances the stream");
  assert.notDeepEqual(arr(new Init(43).normal([4], 1)), arr(new Init(42).normal([4], 1)));
  const big = arr(new Init(1).normal([20000], 2));
  const mean = big.reduce((s, v) => s + v, 0) / big.length;
  const std = Math.sqrt(big.reduce((s, v) => s + (v - mean) ** 2, 0) / big.length);
  assert.ok(Math.abs(mean) < 0.05 && Math.abs(std - 2) < 0.05, `mean ${mean} std ${std}`);
  const u = arr(new Init(2).uniform([5000], 0.5));
  assert.ok(u.every((v) => Math.abs(v) <= 0.5) && Math.max(...u) > 0.49 && Math.min(...u) < -0.49);
  assert.deepEqual(arr(a.zeros([2])), [0, 0]);
  assert.deepEqual(arr(a.ones([2])), [1, 1]);
});

test("Init.forLoading allocates zeros and draws nothing; a load then fills every parameter", () => {
  const empty = new Tiny(Init.forLoading());
  for (const [n, v] of empty.namedParameters()) {
    assert.ok(
      arr(v).every((x) => x === 0 || x === 1),
      `${n}: zeros (or a norm's ones), no random draw`,
    );
  }
  assert.ok(
    arr(empty.qkv.weight).every((x) => x === 0),
    "a normal-initialised weight is all zeros",
  );
  const trained = new Tiny(new Init(7));
  empty.loadStateDict(trained.stateDict());
  for (const [n, t] of trained.stateDict()) assert.deepEqual(arr(empty.stateDict().get(n)!), arr(t), n);
  empty.dispose();
  trained.dispose();
});

test("parameter names, order, counts and default inits", () => {
  const m = new Tiny(new Init(0));
  const names = m.namedParameters().map(([n]) => n);
  assert.deepEqual(names, [
    "in_conv.weight",
    "in_conv.bias",
    "norm.weight",
    "norm.bias",
    "down.weight",
    "down.bias",
    "emb.weight",
    "ln.weight",
    "ln.bias",
    "qkv.weight",
    "qkv.bias",
    "blocks.0.weight",
    "blocks.0.bias",
    "blocks.1.weight",
    "out.weight",
  ]);
  assert.deepEqual(m.namedParameters("model").map(([n]) => n)[0], "model.in_conv.weight");
  assert.deepEqual(m.inConv.weight.shape, [3, 3, 2, 4]);
  assert.deepEqual(m.qkv.weight.shape, [4, 12]);
  assert.equal(m.parameters().length, names.length);
  assert.equal(m.numParams(), 72 + 4 + 8 + 144 + 4 + 20 + 8 + 48 + 12 + 20 + 16 + 8);
  assert.deepEqual([...m.stateDict().keys()], names);
  assert.deepEqual(arr(m.norm.weight), [1, 1, 1, 1]);
  assert.deepEqual(arr(m.inConv.bias!), [0, 0, 0, 0]);
  const w = arr(new Conv2d(new Init(3), 64, 8, 3).weight);
  const std = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
  assert.ok(Math.abs(std - 1 / Math.sqrt(9 * 64)) < 0.1 / Math.sqrt(9 * 64), `conv init std ${std}`);
  m.dispose();
});

for (const backend of BACKENDS) {
  describe(`layers on ${backend}`, () => {
    before(async () => {
      await tf.setBackend(backend);
    });

    test("GroupNorm (4-D and 3-D) and LayerNorm match a JS reference", () => {
      const init = new Init(11);
      const gn = new GroupNorm(2, 6, 1e-5);
      const sd = new Map<string, Tensor>([
        ["weight", init.normal([6], 1)],
        ["bias", init.normal([6], 1)],
      ]);
      gn.loadStateDict(sd);
      const x = init.normal([2, 3, 2, 6], 2) as Tensor4D;
      const xv = arr(x);
      const wv = arr(sd.get("weight")!);
      const bv = arr(sd.get("bias")!);
      const ref = new Float32Array(xv.length);
      for (let b = 0; b < 2; b++)
        for (let g = 0; g < 2; g++) {
          const idx: number[] = [];
          for (let p = 0; p < 6; p++) for (let c = g * 3; c < g * 3 + 3; c++) idx.push(b * 36 + p * 6 + c);
          const mean = idx.reduce((s, i) => s + xv[i]!, 0) / idx.length;
          const v = idx.reduce((s, i) => s + (xv[i]! - mean) ** 2, 0) / idx.length;
          for (const i of idx) ref[i] = ((xv[i]! - mean) / Math.sqrt(v + 1e-5)) * wv[i % 6]! + bv[i % 6]!;
        }
      close(arr(gn.forward(x)), ref, 1e-4, "GroupNorm 4-D");
      close(arr(gn.forward(tf.reshape(x, [2, 6, 6]) as Tensor3D)), ref, 1e-4, "GroupNorm 3-D");
      assert.throws(() => gn.forward(tf.zeros([1, 2, 2, 4]) as Tensor4D), /expected 6 channels/);

      const ln = new LayerNorm(6);
      const lref = new Float32Array(xv.length);
      for (let r = 0; r < 12; r++) {
        const row = xv.slice(r * 6, r * 6 + 6);
        const mean = row.reduce((s, v) => s + v, 0) / 6;
        const v = row.reduce((s, u) => s + (u - mean) ** 2, 0) / 6;
        row.forEach((u, c) => {
          lref[r * 6 + c] = (u - mean) / Math.sqrt(v + 1e-5);
        });
      }
      close(arr(ln.forward(x)), lref, 1e-4, "LayerNorm");
      gn.dispose();
      ln.dispose();
      tf.dispose([x, ...sd.values()]);
    });

    test("Linear, Conv2d and Embedding forward", () => {
      const init = new Init(12);
      const lin = new Linear(init, 3, 2);
      lin.loadStateDict(
        new Map<string, Tensor>([
          ["weight", tf.tensor2d([1, 2, 3, 4, 5, 6], [3, 2])],
          ["bias", tf.tensor1d([0.5, -1])],
        ]),
      );
      const y = lin.forward(tf.tensor3d([1, 0, 2, 0, 1, 0], [1, 2, 3]));
      assert.deepEqual(y.shape, [1, 2, 2]);
      close(arr(y), [1 + 10 + 0.5, 2 + 12 - 1, 3 + 0.5, 4 - 1], 1e-6, "Linear");
      assert.throws(() => lin.forward(tf.zeros([2, 4])), /expected last dim 3/);

      const conv = new Conv2d(init, 1, 1, 3, { bias: false });
      conv.loadStateDict(new Map([["weight", tf.ones([3, 3, 1, 1])]]));
      const img = tf.ones([1, 3, 3, 1]) as Tensor4D;
      assert.deepEqual(arr(conv.forward(img)), [4, 6, 4, 6, 9, 6, 4, 6, 4], "3x3 box sum with same padding");
      const strided = new Conv2d(init, 1, 1, 3, { stride: 2, padding: "valid", bias: false });
      assert.deepEqual(strided.forward(tf.ones([1, 7, 7, 1]) as Tensor4D).shape, [1, 3, 3, 1]);

      const emb = new Embedding(init, 4, 3);
      const rows = emb.weight.arraySync() as number[][];
      const e = emb.forward(tf.tensor2d([3, 0], [1, 2], "int32"));
      assert.deepEqual(e.shape, [1, 2, 3]);
      close(arr(e), [...rows[3]!, ...rows[0]!], 0, "Embedding");
      for (const m of [lin, conv, strided, emb]) m.dispose();
    });

    test("attention matches a JS reference (scaling, bias, softmax over keys)", () => {
      const init = new Init(13);
      const [B, H, Tq, Tk, D] = [2, 2, 3, 4, 5];
      const q = init.normal([B, H, Tq, D], 1) as Tensor4D;
      const k = init.normal([B, H, Tk, D], 1) as Tensor4D;
      const v = init.normal([B, H, Tk, D], 1) as Tensor4D;
      const bias = init.normal([B, 1, 1, Tk], 3);
      const out = attention(q, k, v, bias);
      const [qv, kv, vv, bv] = [arr(q), arr(k), arr(v), arr(bias)];
      const ref: number[] = [];
      for (let b = 0; b < B; b++)
        for (let h = 0; h < H; h++)
          for (let i = 0; i < Tq; i++) {
            const logits: number[] = [];
            for (let j = 0; j < Tk; j++) {
              let s = 0;
              for (let d = 0; d < D; d++)
                s += qv[((b * H + h) * Tq + i) * D + d]! * kv[((b * H + h) * Tk + j) * D + d]!;
              logits.push(s / Math.sqrt(D) + bv[b * Tk + j]!);
            }
            const mx = Math.max(...logits);
            const ex = logits.map((l) => Math.exp(l - mx));
            const z = ex.reduce((s, e) => s + e, 0);
            for (let d = 0; d < D; d++) {
              let acc = 0;
              for (let j = 0; j < Tk; j++) acc += (ex[j]! / z) * vv[((b * H + h) * Tk + j) * D + d]!;
              ref.push(acc);
            }
          }
      close(arr(out), ref, 1e-4, "attention");
      assert.deepEqual(attention(q, k, v).shape, [B, H, Tq, D]);
      tf.dispose([q, k, v, bias, out]);
    });

    test("timestepEmbedding matches a direct float computation (cos first, odd dim padded)", () => {
      for (const [dim, maxPeriod] of [
        [8, 10000],
        [7, 10000],
        [6, 100],
      ] as const) {
        const ts = [0, 1, 17, 999.5];
        const e = timestepEmbedding(tf.tensor1d(ts), dim, maxPeriod);
        assert.deepEqual(e.shape, [4, dim]);
        const half = Math.floor(dim / 2);
        const ref: number[] = [];
        for (const t of ts) {
          const f = Array.from({ length: half }, (_, i) =>
            Math.fround(Math.exp((-Math.log(maxPeriod) * i) / half)),
          );
          ref.push(
            ...f.map((fi) => Math.cos(Math.fround(t * fi))),
            ...f.map((fi) => Math.sin(Math.fround(t * fi))),
          );
          if (dim % 2) ref.push(0);
        }
        close(arr(e), ref, 1e-4, `timestepEmbedding dim ${dim}`);
      }
      close(
        arr(timestepEmbedding(tf.tensor1d([3, 5], "int32"), 4)),
        arr(timestepEmbedding(tf.tensor1d([3, 5]), 4)),
        0,
        "int t",
      );
    });

    test("end-to-end gradients of every parameter pass finite differences", () => {
      const init = new Init(14);
      const m = new Tiny(init);
      // Move GroupNorm/LayerNorm/biases off their trivial inits so their gradients are exercised in general position.
      const sd = new Map<string, Tensor>();
      for (const [n, p] of m.namedParameters()) sd.set(n, tf.add(p, init.normal(p.shape, 0.3)));
      m.loadStateDict(sd);
      tf.dispose([...sd.values()]);
      const x = init.normal([2, 6, 4, 2], 1) as Tensor4D;
      const t = tf.tensor1d([3, 40]);
      const ids = tf.tensor2d([1, 4, 4, 0], [2, 2], "int32");
      const r = init.normal([2, 6, 4, 2], 1);
      const params = m.parameters();
      const loss = () => tf.sum(tf.mul(m.forward(x, t, ids), r)) as Scalar;
      const { grads } = tf.variableGrads(loss, params);
      const eps = 1e-2;
      for (const [name, p] of m.namedParameters()) {
        const v = init.normal(p.shape, 1);
        const g = grads[p.name]!;
        const analytic = tf.sum(tf.mul(g, v)).dataSync()[0]!;
        const orig = p.clone();
        const at = (s: number) => {
          p.assign(tf.add(orig, tf.mul(v, s)));
          return loss().dataSync()[0]!;
        };
        const numeric = (at(eps) - at(-eps)) / (2 * eps);
        p.assign(orig);
        const err = Math.abs(analytic - numeric) / Math.max(1, Math.abs(numeric));
        assert.ok(err < 1e-2, `${name}: analytic ${analytic} numeric ${numeric}`);
        tf.dispose([v, orig]);
      }
      tf.dispose([x, t, ids, r, ...Object.values(grads)]);
      m.dispose();
    });

    test("no layer leaks tensors through a forward and a gradient step", () => {
      const init = new Init(15);
      const x4 = init.normal([2, 4, 4, 4], 1) as Tensor4D;
      const x3 = init.normal([2, 5, 4], 1) as Tensor3D;
      const ids = tf.tensor2d([0, 1, 2, 1], [2, 2], "int32");
      const t = tf.tensor1d([1, 2]);
      const cases: [string, Module, () => Tensor][] = [];
      const conv = new Conv2d(init, 4, 3, 3, { stride: 2 });
      cases.push(["Conv2d", conv, () => conv.forward(x4)]);
      const lin = new Linear(init, 4, 3);
      cases.push(["Linear", lin, () => lin.forward(x3)]);
      const gn = new GroupNorm(2, 4);
      cases.push(["GroupNorm", gn, () => tf.add(tf.sum(gn.forward(x4)), tf.sum(gn.forward(x3)))]);
      const ln = new LayerNorm(4);
      cases.push(["LayerNorm", ln, () => ln.forward(x3)]);
      const emb = new Embedding(init, 3, 4);
      cases.push(["Embedding", emb, () => emb.forward(ids)]);
      const tiny = new Tiny(init);
      cases.push([
        "Tiny (attention, pools, gelu, silu, timestepEmbedding)",
        tiny,
        () => tiny.forward(tf.slice(x4, [0, 0, 0, 0], [2, 4, 4, 2]), t, ids),
      ]);
      for (const [name, m, fwd] of cases) {
        const before = tf.memory().numTensors;
        tf.tidy(() => {
          fwd();
          tf.variableGrads(() => tf.sum(fwd()) as Scalar, m.parameters());
        });
        assert.equal(tf.memory().numTensors, before, `${name} leaked`);
        m.dispose();
      }
      tf.dispose([x4, x3, ids, t]);
    });
  });
}

test("state dict round trip, and errors that name the tensor, shapes and source", async () => {
  await tf.setBackend("wasm");
  const a = new Tiny(new Init(1));
  const b = new Tiny(new Init(2));
  b.loadStateDict(a.stateDict(), { source: "a.safetensors" });
  for (const [n, t] of a.stateDict()) assert.deepEqual(arr(b.stateDict().get(n)!), arr(t), n);

  const sd = new Map(a.stateDict());
  sd.delete("down.bias");
  assert.throws(
    () => b.loadStateDict(sd, { source: "ckpt.bin" }),
    (e: Error) =>
      /ckpt\.bin/.test(e.message) && /missing tensor 'down\.bias' \(expected shape \[4\]\)/.test(e.message),
  );
  b.loadStateDict(sd, { strict: false });

  const extra = new Map(a.stateDict());
  extra.set("bogus.weight", tf.zeros([2, 3]));
  assert.throws(() => b.loadStateDict(extra), /unexpected tensor 'bogus\.weight' \(found shape \[2, 3\]\)/);
  b.loadStateDict(extra, { strict: false });

  const wrong = new Map(a.stateDict());
  wrong.set("qkv.weight", tf.zeros([12, 4]));
  assert.throws(
    () => b.loadStateDict(wrong, { strict: false, source: "glide.pt" }),
    /shape mismatch for 'qkv\.weight': expected \[4, 12\], found \[12, 4\] from glide\.pt/,
  );
  // Nothing was assigned by the failed load.
  assert.deepEqual(arr(b.qkv.weight), arr(a.qkv.weight));

  // Loaded values survive disposal of the tensors they came from.
  const copy = new Map<string, Tensor>([...a.stateDict()].map(([n, t]) => [n, tf.clone(t)]));
  b.loadStateDict(copy);
  tf.dispose([...copy.values()]);
  assert.deepEqual(arr(b.out.weight), arr(a.out.weight));
  a.dispose();
  b.dispose();
  tf.dispose([extra.get("bogus.weight")!, wrong.get("qkv.weight")!]);
});
