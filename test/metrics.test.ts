import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { initEngine, type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../src/core/engine.ts";
import { suite } from "../src/data/suites.ts";
import { PALETTE, render, type Scene, sceneForSpec } from "../src/data/world.ts";
import { clipScore } from "../src/metrics/clip-score.ts";
import { aggregateCost } from "../src/metrics/cost.ts";
import { embeddingDiversity, pixelDiversity } from "../src/metrics/diversity.ts";
import {
  classifierProbabilities,
  type Embedder,
  evalClipEmbedder,
  guidanceClipEmbedder,
} from "../src/metrics/embedders.ts";
import { frechetDistance, frechetFromStats } from "../src/metrics/frechet.ts";
import { inceptionScore, softmaxRows } from "../src/metrics/inception-score.ts";
import { checkMetrics, computeMetrics, METRICS } from "../src/metrics/index.ts";
import { matmul, matrix, sqrtPsd, symmetricEigen } from "../src/metrics/linalg.ts";
import { precisionRecall } from "../src/metrics/precision-recall.ts";
import { mcnemarExact, promptAccuracy, wilsonInterval } from "../src/metrics/prompt-accuracy.ts";
import { hashSeed, Rng } from "../src/util/rng.ts";

const close = (got: number, want: number, tol: number, what: string) =>
  assert.ok(Math.abs(got - want) <= tol, `${what}: got ${got}, want ${want} ± ${tol}`);

function gaussianSet(rng: Rng, n: number, d: number, scale = 1, offset = 0): number[][] {
  return Array.from({ length: n }, () => Array.from({ length: d }, () => offset + scale * rng.normal()));
}

describe("linear algebra", () => {
  it("Jacobi eigen-decomposition reconstructs a symmetric matrix and its square root squares back", () => {
    const rng = new Rng(1);
    const n = 12;
    const b = matrix(
      n,
      Array.from({ length: n * n }, () => rng.normal()),
    );
    const bt = matrix(n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) bt.data[i * n + j] = b.data[j * n + i]!;
    const spd = matmul(b, bt);
    const { values } = symmetricEigen(spd);
    let tr = 0;
    for (let i = 0; i < n; i++) tr += spd.data[i * n + i]!;
    close(
      values.reduce((a, v) => a + v, 0),
      tr,
      1e-9 * tr,
      "sum of eigenvalues = trace",
    );
    const r = sqrtPsd(spd);
    const back = matmul(r, r);
    let err = 0;
    for (let i = 0; i < n * n; i++) err = Math.max(err, Math.abs(back.data[i]! - spd.data[i]!));
    assert.ok(err < 1e-9, `sqrt(M)² = M within 1e-9, max error ${err}`);
  });
});

describe("Fréchet distance", () => {
  const rng = new Rng(hashSeed("frechet"));
  const a = gaussianSet(rng, 200, 16);

  it("is 0 for identical sets", () => {
    close(frechetDistance(a, a), 0, 1e-9, "FD(a, a)");
  });

  it("is ‖shift‖² for a set against its shifted copy", () => {
    const shift = Array.from({ length: 16 }, (_, i) => (i % 3) - 1 + 0.25 * i);
    const b = a.map((v) => v.map((x, i) => x + shift[i]!));
    const want = shift.reduce((s, x) => s + x * x, 0);
    close(frechetDistance(a, b), want, 1e-8 * want, "FD(a, a + shift)");
  });

  it("is the squared mean distance for far sets with equal covariances", () => {
    const b = a.map((v) => v.map((x) => x + 100));
    close(frechetDistance(a, b), 16 * 100 * 100, 1e-6, "FD of sets 100 apart in every coordinate");
  });

  it("matches the closed form for Gaussians with known, non-commuting covariances", () => {
    // 2x2: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for PSD M, and Σ1Σ2 has the eigenvalues of sqrt(Σ1)Σ2sqrt(Σ1).
    const s1 = matrix(2, [2, 0.6, 0.6, 1]);
    const s2 = matrix(2, [1, -0.3, -0.3, 3]);
    const p = matmul(s1, s2);
    const trP = p.data[0]! + p.data[3]!;
    const detP = p.data[0]! * p.data[3]! - p.data[1]! * p.data[2]!;
    const mu1 = [1, 2];
    const mu2 = [-0.5, 4];
    const want = 1.5 ** 2 + 2 ** 2 + 3 + 4 - 2 * Math.sqrt(trP + 2 * Math.sqrt(detP));
    close(frechetFromStats({ mu: mu1, sigma: s1 }, { mu: mu2, sigma: s2 }), want, 1e-12, "2-D closed form");
    // Diagonal covariances in 64-D: Σ(σ1 − σ2)² with the mean term.
    const d = 64;
    const v1 = Array.from({ length: d }, (_, i) => 0.5 + i / 10);
    const v2 = Array.from({ length: d }, (_, i) => 2 + Math.sin(i));
    const diag = (v: number[]) => {
      const m = matrix(d);
      v.forEach((x, i) => {
        m.data[i * d + i] = x;
      });
      return m;
    };
    const wantDiag = d * 0.01 + v1.reduce((s, x, i) => s + (Math.sqrt(x) - Math.sqrt(v2[i]!)) ** 2, 0);
    const got = frechetFromStats(
      { mu: new Array(d).fill(0), sigma: diag(v1) },
      { mu: new Array(d).fill(0.1), sigma: diag(v2) },
    );
    close(got, wantDiag, 1e-10, "64-D diagonal closed form");
  });

  it("approaches the closed form from samples of two Gaussians", () => {
    const r = new Rng(7);
    const x = gaussianSet(r, 4000, 2, 1, 0);
    const y = gaussianSet(r, 4000, 2, 2, 1);
    // N(0, I) vs N(1, 4I) in 2-D: ‖μ‖² = 2, tr = 2 + 8 − 2·2·2 = 2.
    close(frechetDistance(x, y), 4, 0.35, "sampled FD");
  });
});

describe("precision and recall", () => {
  const rng = new Rng(hashSeed("pr"));
  const real = gaussianSet(rng, 100, 8);

  it("are 1 for identical sets", () => {
    const r = precisionRecall(real, real, 3);
    assert.equal(r.precision, 1, "precision of identical sets");
    assert.equal(r.recall, 1, "recall of identical sets");
  });

  it("are 0 for far apart sets", () => {
    const far = real.map((v) => v.map((x) => x + 50));
    const r = precisionRecall(real, far, 3);
    assert.equal(r.precision, 0, "precision of far sets");
    assert.equal(r.recall, 0, "recall of far sets");
  });

  it("split fidelity from coverage: a collapsed set is precise but covers little", () => {
    const collapsed = gaussianSet(rng, 100, 8, 0.05);
    const r = precisionRecall(real, collapsed, 3);
    assert.ok(r.precision > 0.9, `collapsed-at-mode precision ${r.precision} > 0.9`);
    assert.ok(r.recall < 0.2, `collapsed-at-mode recall ${r.recall} < 0.2`);
  });
});

describe("Inception score", () => {
  it("is 1 for uniform predictions", () => {
    const probs = Array.from({ length: 50 }, () => new Array(10).fill(0.1));
    close(inceptionScore(probs).score, 1, 1e-12, "IS of uniform predictions");
  });

  it("is the number of classes for confident, evenly spread predictions", () => {
    const c = 24;
    const probs = Array.from({ length: 4 * c }, (_, i) => {
      const p = new Array(c).fill(0);
      p[i % c] = 1;
      return p;
    });
    close(inceptionScore(probs).score, c, 1e-9, "IS of one-hot predictions");
    close(inceptionScore(softmaxRows(probs.map((p) => p.map((x) => 60 * x)))).score, c, 1e-6, "via softmax");
    const split = inceptionScore(probs, 4);
    close(split.score, c, 1e-9, "IS over 4 splits");
    close(split.std, 0, 1e-9, "IS spread over identical splits");
  });

  it("rejects logits passed as probabilities", () => {
    assert.throws(() => inceptionScore([[2, 1, 0]]), /sums to/);
  });
});

describe("CLIP score", () => {
  it("is 100 for identical unit vectors; torchmetrics' CLIPScore clamps the mean, not each cosine", () => {
    const u = [0.6, 0.8, 0];
    const r = clipScore([u, u], [u]);
    close(r.score, 100, 1e-12, "CLIP score of identical vectors");
    close(r.torchmetrics, 100, 1e-12, "torchmetrics CLIP score of identical vectors");
    const opposite = clipScore([u, [-0.6, -0.8, 0]], [u, u]);
    close(opposite.score, 0, 1e-12, "mean of +100 and −100");
    close(opposite.torchmetrics, 0, 1e-12, "max(mean(100, −100), 0)");
    const negative = clipScore(
      [
        [-0.6, -0.8, 0],
        [0, 0, 1],
      ],
      [u, u],
    );
    close(negative.torchmetrics, 0, 1e-12, "a negative mean clamps to 0");
  });
});

describe("diversity", () => {
  it("is 0 for identical samples and positive otherwise", () => {
    const img = render({ objects: [{ shape: "circle", colour: "red", size: "large", row: 1, col: 1 }] });
    const groups = ["p", "p", "p"];
    assert.equal(pixelDiversity([img, img, img], groups).value, 0, "pixel diversity of identical samples");
    const z = [0.2, 0.3, 0.9];
    close(embeddingDiversity([z, z, z], groups).value, 0, 1e-12, "embedding diversity of identical samples");
    const other = render({ objects: [{ shape: "square", colour: "blue", size: "small", row: 0, col: 0 }] });
    assert.ok(
      pixelDiversity([img, other], ["p", "p"]).value > 0,
      "different samples have pixel diversity > 0",
    );
    close(
      embeddingDiversity(
        [
          [1, 0],
          [0, 1],
        ],
        ["q", "q"],
      ).value,
      1,
      1e-12,
      "orthogonal embeddings: 1 − cos = 1",
    );
  });

  it("averages within prompts, never across them", () => {
    const r = embeddingDiversity(
      [
        [1, 0],
        [1, 0],
        [0, 1],
        [0, 1],
      ],
      ["a", "a", "b", "b"],
    );
    close(r.value, 0, 1e-12, "two prompts, each with identical samples");
    assert.ok(
      Number.isNaN(embeddingDiversity([[1, 0]], ["a"]).value),
      "one sample per prompt has no pairs: NaN",
    );
  });
});

describe("prompt accuracy", () => {
  it("is 1 on clean renders of every suite's prompts", () => {
    const prompts = ["colour", "position", "relation"].flatMap((s) =>
      suite(s as "colour", { n: 8, seed: 3, includeHeldOut: true }),
    );
    const images = prompts.map((p, i) =>
      render(sceneForSpec(p.spec, new Rng(hashSeed("acc", i)), { heldOut: "include" })),
    );
    const r = promptAccuracy(images, prompts);
    assert.equal(r.accuracy, 1, "overall accuracy on clean renders");
    for (const [a, v] of Object.entries(r.attributes)) assert.equal(v, 1, `attribute ${a} on clean renders`);
    for (const [s, t] of Object.entries(r.suites)) assert.equal(t.accuracy, 1, `suite ${s} on clean renders`);
    assert.equal(r.suites.colour?.n, 8, "8 colour prompts tallied");
  });

  it("flags the colour attribute on a render of the wrong colour", () => {
    const spec = { objects: [{ shape: "circle" as const, colour: "red" as const }] };
    const wrong: Scene = { objects: [{ shape: "circle", colour: "blue", size: "large", row: 1, col: 1 }] };
    assert.notDeepEqual(PALETTE.red, PALETTE.blue, "palette colours differ");
    const r = promptAccuracy([render(wrong)], [{ id: "x", spec, suite: "colour" }]);
    assert.equal(r.accuracy, 0, "wrong colour is not correct");
    assert.equal(r.attributes.colour, 0, "colour attribute fails");
    assert.equal(r.attributes.shape, 1, "shape attribute passes");
    assert.equal(r.attributes.count, 1, "count attribute passes");
    assert.deepEqual(r.perImage[0]?.failed, ["colour"], "only colour failed");
  });

  it("gives Wilson score intervals (textbook values) and refuses impossible counts", () => {
    // Reference values from the closed form (Wilson 1927; e.g. Agresti & Coull 1998, Table 1 layout).
    const [lo0, hi0] = wilsonInterval(0, 10);
    close(lo0, 0, 1e-12, "0/10 lower");
    close(hi0, 0.27753, 1e-4, "0/10 upper");
    const [lo8, hi8] = wilsonInterval(8, 10);
    close(lo8, 0.49016, 1e-4, "8/10 lower");
    close(hi8, 0.94332, 1e-4, "8/10 upper");
    const [lo, hi] = wilsonInterval(47, 48);
    assert.ok(lo < 47 / 48 && hi > 47 / 48 && hi <= 1, "interval holds the proportion inside [0, 1]");
    assert.throws(() => wilsonInterval(5, 4), /0 <= correct <= n/);
    assert.throws(() => wilsonInterval(0, 0), /n > 0/);
  });

  it("gives exact McNemar p-values (binomial tails) and refuses bad counts", () => {
    // 10 discordant pairs split 9:1: 2·(1 + 10)/1024.
    close(mcnemarExact(9, 1), 22 / 1024, 1e-12, "9 vs 1");
    close(mcnemarExact(1, 9), 22 / 1024, 1e-12, "symmetric");
    assert.equal(mcnemarExact(5, 5), 1, "an even split is capped at 1");
    assert.equal(mcnemarExact(0, 0), 1, "no discordant pairs: no evidence");
    close(mcnemarExact(6, 0), 2 / 64, 1e-12, "6 vs 0");
    // Large n stays finite (2^-2000 underflows a direct product): 1000 vs 1000 is 1, 1100 vs 900 far below 0.05.
    assert.equal(mcnemarExact(1000, 1000), 1, "large even split");
    const p = mcnemarExact(1100, 900);
    assert.ok(p > 0 && p < 1e-4, `1100 vs 900: p=${p}`);
    assert.throws(() => mcnemarExact(-1, 2), /non-negative integer/);
  });
});

describe("cost", () => {
  it("weights batches by images", () => {
    const c = aggregateCost([
      { images: 8, nfe: 100, seconds: 4 },
      { images: 2, nfe: 50, seconds: 1 },
    ]);
    close(c.nfe, 90, 1e-12, "image-weighted NFE");
    close(c.secondsPerImage, 0.5, 1e-12, "seconds per image");
  });
});

describe("registry", () => {
  // A fake embedder with known geometry: the image embedding is the mean colour, the text embedding the colour
  // the prompt names; a render of the right colour on a dark background then has cos close to 1.
  const fake: Embedder = {
    images: (xs) =>
      xs.map((x) => {
        const m = [0, 0, 0];
        for (let i = 0; i < x.length; i++) m[i % 3]! += x[i]!;
        return m;
      }),
    texts: (ts) => ts.map((t) => [...(t.includes("red") ? PALETTE.red : PALETTE.blue)]),
  };

  it("computes named metrics with shared features and per-prompt values", () => {
    const prompts = suite("colour", { n: 4, seed: 1 });
    const inputPrompts = prompts.flatMap((p) => [p, p]);
    const images = inputPrompts.map((p, i) => render(sceneForSpec(p.spec, new Rng(hashSeed("reg", i)))));
    let imageCalls = 0;
    const counting: Embedder = {
      images: (xs, s) => {
        imageCalls++;
        return fake.images(xs, s);
      },
      texts: fake.texts,
    };
    const feats = fake.images(images, 32);
    const r = computeMetrics(
      [
        "clip_score",
        "fd",
        "kid",
        "precision_recall",
        "diversity",
        "pixel_diversity",
        "prompt_accuracy",
        "cost",
      ],
      { images, size: 32, prompts: inputPrompts, cost: [{ images: 8, nfe: 40, seconds: 2 }] },
      { evalEmbedder: counting, reference: { features: feats } },
    );
    assert.equal(imageCalls, 1, "image embeddings computed once for CLIP score, FD, P/R and diversity");
    close(r.metrics.fd!, 0, 1e-9, "FD against the same features");
    assert.equal(r.metrics.precision, 1, "precision against the same features");
    assert.equal(r.metrics.accuracy, 1, "accuracy of clean renders");
    assert.equal(r.metrics.nfe, 40, "nfe");
    assert.ok(r.metrics.clip_score! > 0, `clip score ${r.metrics.clip_score} > 0`);
    assert.equal(r.perPrompt.length, 4, "one per-prompt entry per distinct prompt");
    assert.equal(r.perPrompt[0]?.n, 2, "two samples per prompt");
    assert.ok("accuracy" in (r.perPrompt[0]?.metrics ?? {}), "per-prompt accuracy present");
    const declared = new Set(Object.values(METRICS).flatMap((m) => m.outputs.map((o) => o.key)));
    for (const key of Object.keys(r.metrics)) assert.ok(declared.has(key), `metric key ${key} is declared`);
  });

  it("names missing requirements before any work", () => {
    assert.throws(
      () => checkMetrics(["fd", "inception_score"], {}),
      /fd needs reference, features.*inception/,
    );
    assert.throws(() => checkMetrics(["nope"], {}), /unknown metric 'nope'/);
  });
});

describe("model adapters", () => {
  it("feed models NHWC [-1, 1] batches at t = 0 and return rows in input order", async () => {
    await initEngine("cpu", { quiet: true });
    const size = 2;
    const images = Array.from({ length: 5 }, (_, i) => new Float32Array(size * size * 3).fill(i / 4));
    const seenT: number[] = [];
    // Mean pixel and batch size as a 2-D "embedding": checks the range mapping and the batching at once.
    const embed = (x: Tensor4D) =>
      tf.stack([tf.mean(x, [1, 2, 3]), tf.fill([x.shape[0]], x.shape[0])], 1) as Tensor2D;
    const guidance = guidanceClipEmbedder(
      {
        embedImage: (x: Tensor4D, t: Tensor1D) => {
          seenT.push(...t.dataSync());
          return embed(x);
        },
      },
      (prompts) => tf.ones([prompts.length, 2]) as Tensor2D,
      2,
    );
    const rows = guidance.images(images, size);
    assert.deepEqual(
      rows.map((r) => Array.from(r)),
      [
        [-1, 2],
        [-0.5, 2],
        [0, 2],
        [0.5, 2],
        [1, 1],
      ],
      "[0, 1] mapped to [-1, 1], batches of 2",
    );
    assert.ok(
      seenT.every((t) => t === 0),
      `guidance CLIP read at t = 0 (saw ${seenT})`,
    );
    let maskSum = -1;
    const evalEmb = evalClipEmbedder(
      {
        embedImage: embed,
        embedText: (tokens: Tensor2D, mask: Tensor2D) => {
          maskSum = tf.sum(mask).dataSync()[0]!;
          return tf.cast(tf.slice(tokens, [0, 0], [tokens.shape[0], 2]), "float32") as Tensor2D;
        },
      },
      8,
    );
    assert.equal(evalEmb.texts(["a red circle"]).length, 1, "one text row");
    assert.equal(maskSum, 4, "mask covers 3 words and <end>");
    const probs = classifierProbabilities({ logits: (x: Tensor4D) => tf.zeros([x.shape[0], 4]) as Tensor2D })(
      images,
      size,
    );
    close(inceptionScore(probs).score, 1, 1e-6, "IS of a classifier with flat logits");
  });
});
