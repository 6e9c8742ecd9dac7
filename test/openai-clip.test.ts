// OpenAI's CLIP ViT against PyTorch on a tiny random-weight model (test/fixtures/openai-clip, made by
// tools/golden/openai_clip.py: float64 reference outputs, CLIP's preprocessing with PIL's bicubic resampling),
// plus config inference, parameter counts of the released ViTs, loader errors and the sweep wiring.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { initEngine, type Tensor, type Tensor4D, tf } from "../src/core/engine.ts";
import { npyToFloat32, npyToNumbers, readNpy } from "../src/core/npy.ts";
import { openaiClipEmbedder } from "../src/metrics/embedders.ts";
import {
  clipResizeCrop,
  loadOpenAIClip,
  loadOpenAIEvalClip,
  OPENAI_CLIP_CONFIGS,
  OPENAI_CLIP_VIT_B16,
  type OpenAIClip,
  type OpenAIClipConfig,
  openaiClipConfigFromFile,
  openaiClipConfigFromShapes,
  openaiClipParamCount,
  pilBicubicWeights,
} from "../src/nets/openai-clip.ts";
import { readSafetensors, type WritableTensor, writeSafetensors } from "../src/nets/safetensors.ts";
import { ClipTokenizer } from "../src/nets/tokenizers.ts";
import { parseSweepConfig } from "../src/sweep/config.ts";

const FIXTURE = join(import.meta.dirname, "fixtures", "openai-clip");
const WEIGHTS = join(FIXTURE, "weights.safetensors");
const manifest = JSON.parse(readFileSync(join(FIXTURE, "manifest.json"), "utf8")) as {
  prompts: string[];
  params: number;
};
// Heads are not in the shapes; the tiny model has more than width / 64 to exercise the head split.
const HEADS = { visionHeads: 4, textHeads: 2 };
const TINY: OpenAIClipConfig = {
  embedDim: 24,
  imageResolution: 32,
  visionPatchSize: 8,
  visionWidth: 64,
  visionLayers: 2,
  visionHeads: 4,
  contextLength: 77,
  vocabSize: 514,
  textWidth: 32,
  textLayers: 2,
  textHeads: 2,
};
const TOL = 1e-5;

function fixture(name: string): { data: Float32Array; shape: number[] } {
  const a = readNpy(join(FIXTURE, `${name}.npy`));
  return { data: npyToFloat32(a), shape: a.shape };
}

function fixtureTensor(name: string): Tensor4D {
  const f = fixture(name);
  return tf.tensor4d(f.data, f.shape as [number, number, number, number], "float32");
}

/** max |ours − ref| / max |ref|. */
function relErr(ours: Tensor, ref: { data: Float32Array; shape: number[] }): number {
  assert.deepEqual(ours.shape, ref.shape, "output shape equals the reference's");
  const a = ours.dataSync();
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - ref.data[i]!));
    scale = Math.max(scale, Math.abs(ref.data[i]!));
  }
  return diff / scale;
}

/** The official state dict's names and shapes (openai/CLIP model.py, PyTorch layouts) of a config. */
function officialShapes(c: OpenAIClipConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const blocks = (prefix: string, w: number, n: number) => {
    for (let i = 0; i < n; i++) {
      const b = `${prefix}.resblocks.${i}`;
      m.set(`${b}.attn.in_proj_weight`, [3 * w, w]);
      m.set(`${b}.attn.in_proj_bias`, [3 * w]);
      m.set(`${b}.attn.out_proj.weight`, [w, w]);
      m.set(`${b}.attn.out_proj.bias`, [w]);
      m.set(`${b}.ln_1.weight`, [w]);
      m.set(`${b}.ln_1.bias`, [w]);
      m.set(`${b}.mlp.c_fc.weight`, [4 * w, w]);
      m.set(`${b}.mlp.c_fc.bias`, [4 * w]);
      m.set(`${b}.mlp.c_proj.weight`, [w, 4 * w]);
      m.set(`${b}.mlp.c_proj.bias`, [w]);
      m.set(`${b}.ln_2.weight`, [w]);
      m.set(`${b}.ln_2.bias`, [w]);
    }
  };
  const vw = c.visionWidth;
  const grid = c.imageResolution / c.visionPatchSize;
  m.set("visual.class_embedding", [vw]);
  m.set("visual.positional_embedding", [grid * grid + 1, vw]);
  m.set("visual.proj", [vw, c.embedDim]);
  m.set("visual.conv1.weight", [vw, 3, c.visionPatchSize, c.visionPatchSize]);
  m.set("visual.ln_pre.weight", [vw]);
  m.set("visual.ln_pre.bias", [vw]);
  blocks("visual.transformer", vw, c.visionLayers);
  m.set("visual.ln_post.weight", [vw]);
  m.set("visual.ln_post.bias", [vw]);
  m.set("positional_embedding", [c.contextLength, c.textWidth]);
  m.set("text_projection", [c.textWidth, c.embedDim]);
  m.set("logit_scale", []);
  blocks("transformer", c.textWidth, c.textLayers);
  m.set("token_embedding.weight", [c.vocabSize, c.textWidth]);
  m.set("ln_final.weight", [c.textWidth]);
  m.set("ln_final.bias", [c.textWidth]);
  return m;
}

const countOf = (shapes: Map<string, number[]>) =>
  [...shapes.values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);

describe("OpenAI CLIP config and parameter count", () => {
  test("the tiny fixture's header is the official state dict of its config (plus the JIT scalars)", () => {
    const st = readSafetensors(WEIGHTS);
    const found = new Map(st.names().map((n) => [n, st.info(n).shape]));
    st.close();
    for (const k of ["input_resolution", "context_length", "vocab_size"]) {
      assert.ok(found.delete(k), `the fixture carries the JIT scalar '${k}'`);
    }
    assert.deepEqual(
      new Map([...found].sort()),
      new Map([...officialShapes(TINY)].sort()),
      "names and shapes as PyTorch's state_dict() gives them",
    );
  });

  test("config from shapes, as build_model infers it", () => {
    assert.deepEqual(openaiClipConfigFromFile(WEIGHTS, HEADS), TINY, "tiny fixture");
    for (const [name, c] of Object.entries(OPENAI_CLIP_CONFIGS)) {
      // Released models: heads default to width / 64.
      assert.deepEqual(openaiClipConfigFromShapes(officialShapes(c)), c, `${name} from its shapes`);
    }
  });

  test("config inference errors name the problem", () => {
    const b16 = officialShapes(OPENAI_CLIP_VIT_B16);
    const noProj = new Map(b16);
    noProj.delete("visual.proj");
    assert.throws(() => openaiClipConfigFromShapes(noProj), /no tensor 'visual\.proj'/, "no visual.proj");
    noProj.set("visual.layer1.0.conv1.weight", [64, 64, 1, 1]);
    assert.throws(() => openaiClipConfigFromShapes(noProj), /ModifiedResNet/, "ResNet towers are refused");
    const noLn = new Map(b16);
    noLn.delete("ln_final.weight");
    assert.throws(() => openaiClipConfigFromShapes(noLn), /missing tensor 'ln_final\.weight'/, "missing key");
    assert.throws(
      () => openaiClipConfigFromShapes(officialShapes(TINY)),
      /width 32 is not a multiple of 64.*textHeads/,
      "heads of a non-standard width must be given",
    );
    const badPos = new Map(b16);
    badPos.set("visual.positional_embedding", [198, 768]);
    assert.throws(
      () => openaiClipConfigFromShapes(badPos),
      /not 1 \+ grid²/,
      "positional rows not 1 + grid²",
    );
  });

  test("parameter counts from the config arithmetic (nothing allocated)", () => {
    // PyTorch's count of the official ViT-B/16, logit_scale included (tools/golden/openai_clip.py --counts, and
    // openai/CLIP's own CLIP class built with the ViT-B/16 arguments).
    assert.equal(openaiClipParamCount(OPENAI_CLIP_VIT_B16), 149_620_737, "ViT-B/16");
    assert.equal(openaiClipParamCount(OPENAI_CLIP_CONFIGS["ViT-B/32"]), 151_277_313, "ViT-B/32");
    assert.equal(openaiClipParamCount(OPENAI_CLIP_CONFIGS["ViT-L/14"]), 427_616_513, "ViT-L/14");
    for (const c of [TINY, ...Object.values(OPENAI_CLIP_CONFIGS)]) {
      assert.equal(
        openaiClipParamCount(c),
        countOf(officialShapes(c)),
        "arithmetic = sum of the official shapes",
      );
    }
    assert.equal(openaiClipParamCount(TINY), manifest.params, "tiny: PyTorch's count in the manifest");
  });
});

describe("OpenAI CLIP vs PyTorch (tiny random-weight ViT)", () => {
  let model: OpenAIClip;
  let tokens: number[][];

  before(async () => {
    await initEngine("wasm", { quiet: true });
    model = loadOpenAIClip(WEIGHTS, HEADS);
    const t = readNpy(join(FIXTURE, "tokens.npy"));
    const flat = npyToNumbers(t);
    tokens = Array.from({ length: t.shape[0]! }, (_, i) => flat.slice(i * 77, (i + 1) * 77));
  });

  after(() => model?.dispose());

  test("our module has PyTorch's parameter count and the fixture's config", () => {
    assert.equal(model.numParams(), manifest.params, "numParams equals torch's");
    assert.deepEqual(model.config, TINY, "config inferred with the given heads");
  });

  test("CLIP's tokenizer (no merges) gives the fixture's token rows, truncation included", () => {
    const ours = new ClipTokenizer([]).tokenize(manifest.prompts, 77).tokens;
    assert.deepEqual(ours, tokens, "token ids equal the generator's");
    assert.equal(tokens[2]![76], 513, "a long prompt ends with EOT at the last position");
  });

  test("PIL bicubic weights: identity at scale 1, rows sum to 1", () => {
    const id = pilBicubicWeights(5, 5);
    for (let i = 0; i < 5; i++)
      for (let j = 0; j < 5; j++) {
        // === rather than assert.equal: the kernel gives -0 at ±1, which is 0 here.
        assert.ok(id[i * 5 + j] === (i === j ? 1 : 0), `identity at (${i}, ${j}): ${id[i * 5 + j]}`);
      }
    for (const [a, b] of [
      [20, 32],
      [56, 37],
    ] as const) {
      const w = pilBicubicWeights(a, b);
      for (let o = 0; o < b; o++) {
        const s = w.subarray(o * a, (o + 1) * a).reduce((x, y) => x + y, 0);
        assert.ok(Math.abs(s - 1) < 1e-6, `${a}→${b} row ${o} sums to ${s}`);
      }
    }
  });

  for (const key of ["small", "wide", "tall"]) {
    test(`preprocessing of ${key} images (shorter side, bicubic, centre crop) equals PIL's`, (tc) => {
      const x = fixtureTensor(key);
      const pixels = tf.tidy(() =>
        clipResizeCrop(tf.clipByValue(tf.div(tf.add(x, 1), 2), 0, 1) as Tensor4D, 32),
      );
      const e = relErr(pixels, fixture(`${key}_pixels`));
      tc.diagnostic(`${key} [${x.shape.join(", ")}] pixels rel err ${e.toExponential(2)}`);
      x.dispose();
      pixels.dispose();
      assert.ok(e <= TOL, `${key} pixels rel err ${e}`);
    });
  }

  for (const key of ["images", "small", "wide", "tall"]) {
    test(`encodeImage of ${key} equals encode_image`, (tc) => {
      const x = fixtureTensor(key);
      const z = model.encodeImage(x);
      const e = relErr(z, fixture(`${key}_features`));
      tc.diagnostic(`${key} image features rel err ${e.toExponential(2)}`);
      x.dispose();
      z.dispose();
      assert.ok(e <= TOL, `${key} image features rel err ${e}`);
    });
  }

  test("encodeText equals encode_text (argmax = EOT position)", (tc) => {
    const z = model.encodeText(tokens);
    const e = relErr(z, fixture("text_features"));
    const fromTensor = model.encodeText(tf.tensor2d(tokens.flat(), [tokens.length, 77], "int32"));
    const same = tf.max(tf.abs(tf.sub(z, fromTensor))).dataSync()[0]!;
    tc.diagnostic(`text features rel err ${e.toExponential(2)}`);
    z.dispose();
    fromTensor.dispose();
    assert.ok(e <= TOL, `text features rel err ${e}`);
    assert.equal(same, 0, "token rows as a tensor or as arrays give the same features");
  });

  test("logits equal the official forward; score is 100·cos of paired rows", (tc) => {
    const x = fixtureTensor("images");
    const { logitsPerImage, logitsPerText } = model.logits(x, tokens);
    const ref = fixture("logits_per_image");
    const e = relErr(logitsPerImage, ref);
    const eT = relErr(tf.transpose(logitsPerText), ref);
    const zi = model.embedImage(x);
    const zt = model.embedText(tokens.slice(0, 2));
    const cos = tf.sum(tf.mul(zi, zt), -1).dataSync();
    const score = model.score(x, tokens.slice(0, 2));
    const s = score.dataSync();
    tc.diagnostic(`logits rel err ${e.toExponential(2)}`);
    for (const t of [x, logitsPerImage, logitsPerText, zi, zt, score]) t.dispose();
    assert.ok(e <= TOL, `logits_per_image rel err ${e}`);
    assert.ok(eT <= TOL, `logits_per_text is the transpose (rel err ${eT})`);
    for (let i = 0; i < 2; i++) assert.ok(Math.abs(s[i]! - 100 * cos[i]!) < 1e-4, `score ${i}: ${s[i]}`);
    assert.throws(
      () => model.score(fixtureTensor("images"), tokens),
      /2 images for 3 token rows/,
      "paired rows",
    );
  });

  test("bad token rows are refused", () => {
    assert.throws(() => model.encodeText([[1, 2, 3]]), /3 ids, expected 77/, "short row");
    const row = [...tokens[0]!];
    row[5] = 514;
    assert.throws(() => model.encodeText([row]), /id 514 outside 0\.\.513/, "id beyond the vocabulary");
  });

  test("the metrics' embedder gives the unit-norm embeddings (images as HWC in [0, 1])", () => {
    const emb = openaiClipEmbedder(model, new ClipTokenizer([]));
    const texts = emb.texts(manifest.prompts);
    const ref = fixture("text_features");
    texts.forEach((row, i) => {
      const r = ref.data.subarray(i * 24, (i + 1) * 24);
      const norm = Math.hypot(...r);
      const err = Math.max(...Array.from(row, (v, j) => Math.abs(v - r[j]! / norm)));
      assert.ok(err < 1e-5, `text ${i} embedding off by ${err}`);
    });
    const x = fixture("images");
    const px = 32 * 32 * 3;
    const images = [0, 1].map((i) =>
      Float32Array.from(x.data.subarray(i * px, (i + 1) * px), (v) => (v + 1) / 2),
    );
    const rows = emb.images(images, 32);
    const refI = fixture("images_features");
    rows.forEach((row, i) => {
      const r = refI.data.subarray(i * 24, (i + 1) * 24);
      const norm = Math.hypot(...r);
      const err = Math.max(...Array.from(row, (v, j) => Math.abs(v - r[j]! / norm)));
      assert.ok(err < 1e-5, `image ${i} embedding off by ${err}`);
    });
  });

  test("no tensors leak from encodeImage, encodeText, logits and score", () => {
    const x = fixtureTensor("small");
    model.embedImage(x).dispose(); // warm-up allocations outside the count
    const before = tf.memory().numTensors;
    for (let i = 0; i < 2; i++) {
      model.encodeImage(x).dispose();
      model.embedText(tokens).dispose();
      const l = model.logits(x, tokens);
      l.logitsPerImage.dispose();
      l.logitsPerText.dispose();
      model.score(x, tokens.slice(0, 2)).dispose();
    }
    const afterCount = tf.memory().numTensors;
    x.dispose();
    assert.equal(afterCount, before, `tensor count ${before} → ${afterCount}`);
  });
});

describe("OpenAI CLIP loader errors", () => {
  let dir: string;
  let tensors: Record<string, WritableTensor>;

  before(async () => {
    await initEngine("wasm", { quiet: true });
    dir = mkdtempSync(join(tmpdir(), "openai-clip-"));
    const st = readSafetensors(WEIGHTS);
    tensors = {};
    for (const n of st.names()) if (st.info(n).dtype === "F32") tensors[n] = st.get(n);
    st.close();
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  const variant = (name: string, edit: (t: Record<string, WritableTensor>) => void): string => {
    const t = { ...tensors };
    edit(t);
    const file = join(dir, `${name}.safetensors`);
    writeSafetensors(file, t);
    return file;
  };

  test("a file without the JIT scalars loads too", () => {
    const before = tf.memory().numTensors;
    const m = loadOpenAIClip(
      variant("plain", () => {}),
      HEADS,
    );
    assert.equal(m.numParams(), manifest.params, "every parameter loaded");
    m.dispose();
    assert.equal(tf.memory().numTensors, before, "load + dispose leaves no tensors");
  });

  test("a missing tensor is named with its official shape, and nothing leaks", () => {
    const file = variant("missing", (t) => {
      delete t["visual.transformer.resblocks.1.mlp.c_fc.bias"];
    });
    const before = tf.memory().numTensors;
    assert.throws(
      () => loadOpenAIClip(file, HEADS),
      /1 missing, 0 unexpected, 0 mis-shaped[\s\S]*missing tensor 'visual\.transformer\.resblocks\.1\.mlp\.c_fc\.bias' \(expected shape \[256\]\)/,
      "missing tensor reported",
    );
    assert.equal(tf.memory().numTensors, before, "a failed load disposes its model");
  });

  test("a mis-shaped tensor is named with expected and found shapes (official layout)", () => {
    const file = variant("misshaped", (t) => {
      const p = t["visual.proj"] as { data: Float32Array; shape: number[] };
      t["visual.proj"] = { data: p.data, shape: [24, 64] };
      const w = t["transformer.resblocks.0.attn.in_proj_weight"] as { data: Float32Array; shape: number[] };
      t["transformer.resblocks.0.attn.in_proj_weight"] = { data: w.data, shape: [32, 96] };
    });
    assert.throws(
      () => loadOpenAIClip(file, HEADS),
      (e: Error) =>
        e.message.includes("shape mismatch for 'visual.proj': expected [64, 24], found [24, 64]") &&
        e.message.includes(
          "shape mismatch for 'transformer.resblocks.0.attn.in_proj_weight': expected [96, 32], found [32, 96]",
        ),
      "mis-shaped tensors reported",
    );
  });

  test("an unexpected tensor is named", () => {
    const file = variant("unexpected", (t) => {
      t["visual.extra.weight"] = { data: new Float32Array(4), shape: [2, 2] };
    });
    assert.throws(
      () => loadOpenAIClip(file, HEADS),
      /unexpected tensor 'visual\.extra\.weight'/,
      "extra tensor",
    );
  });
});

describe("OpenAI CLIP as a sweep's evaluation CLIP", () => {
  const base = { prompts: "a red circle", strategies: [{ kind: "cfg", scales: [1] }] };

  test("evalClipOpenai paths resolve against the config's folder", () => {
    const { config } = parseSweepConfig(
      { ...base, evalClipOpenai: { weights: "w/ViT-B-16.safetensors", vocab: "/abs/bpe.txt.gz" } },
      "s.yaml",
      "/cfg",
    );
    assert.deepEqual(
      config.evalClipOpenai,
      { weights: "/cfg/w/ViT-B-16.safetensors", vocab: "/abs/bpe.txt.gz" },
      "relative weights path joined to the config folder",
    );
    const plain = parseSweepConfig(base, "s.yaml", "/cfg").config;
    assert.ok(
      !("evalClipOpenai" in plain),
      "absent unless configured (resolved configs of older runs unchanged)",
    );
  });

  test("evalClipOpenai and models.evalClip together, or unknown keys, are errors", () => {
    assert.throws(
      () =>
        parseSweepConfig({ ...base, models: { evalClip: "x" }, evalClipOpenai: { weights: "w" } }, "s.yaml"),
      /s\.yaml: evalClipOpenai: replaces models\.evalClip/,
      "one evaluation CLIP only",
    );
    assert.throws(
      () => parseSweepConfig({ ...base, evalClipOpenai: { weights: "w", heads: 3 } }, "s.yaml"),
      /heads/,
      "strict keys",
    );
  });

  test("without a vocabulary the evaluation CLIP says where to get one", () => {
    const saved = process.env.GUIDANCE_LAB_CLIP_BPE;
    delete process.env.GUIDANCE_LAB_CLIP_BPE;
    try {
      assert.throws(
        () => loadOpenAIEvalClip({ weights: WEIGHTS }),
        /bpe_simple_vocab_16e6\.txt\.gz.*GUIDANCE_LAB_CLIP_BPE/,
        "vocabulary required",
      );
    } finally {
      if (saved !== undefined) process.env.GUIDANCE_LAB_CLIP_BPE = saved;
    }
  });
});
