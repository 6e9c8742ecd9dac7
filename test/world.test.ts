import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { readPng, writeGrid, writePng } from "../src/data/png.ts";
import { SUITE_NAMES, suite } from "../src/data/suites.ts";
import {
  BACKGROUNDS,
  type BackgroundName,
  CAPTION_LEVELS,
  caption,
  captionsFor,
  classIndex,
  classOf,
  detokenize,
  END_ID,
  HELD_OUT,
  isHeldOut,
  labelForPrompt,
  NUM_CLASSES,
  parseCaption,
  render,
  renderInto,
  type Scene,
  sampleScene,
  satisfies,
  sceneForSpec,
  specText,
  tokenize,
  UNK_ID,
  VOCAB,
} from "../src/data/world.ts";
import { hashSeed, Rng } from "../src/util/rng.ts";

describe("rng", () => {
  it("is deterministic per seed and streams differ", () => {
    const a = new Rng(7);
    const b = new Rng(7);
    const c = new Rng(8);
    const xa = Array.from({ length: 5 }, () => a.next());
    assert.deepEqual(
      xa,
      Array.from({ length: 5 }, () => b.next()),
    );
    assert.notDeepEqual(
      xa,
      Array.from({ length: 5 }, () => c.next()),
    );
    assert.notEqual(hashSeed("a", 1), hashSeed("a1"));
    assert.notEqual(hashSeed(1, "a"), hashSeed("a", 1));
    assert.equal(hashSeed("x", 3), hashSeed("x", 3));
  });

  it("draws in range with sane moments", () => {
    const r = new Rng("moments");
    let s = 0;
    let s2 = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const k = r.int(5);
      assert.ok(k >= 0 && k < 5 && Number.isInteger(k));
      const z = r.normal();
      s += z;
      s2 += z * z;
    }
    assert.ok(Math.abs(s / n) < 0.05);
    assert.ok(Math.abs(s2 / n - 1) < 0.05);
  });
});

describe("rendering", () => {
  it("same scene gives identical bytes, same seed the same scenes", () => {
    const scenesA = Array.from({ length: 50 }, (_, i) => sampleScene(new Rng(hashSeed(1, i))));
    const scenesB = Array.from({ length: 50 }, (_, i) => sampleScene(new Rng(hashSeed(1, i))));
    assert.deepEqual(scenesA, scenesB);
    for (const s of scenesA) {
      const x = render(s);
      const y = render(structuredClone(s));
      assert.deepEqual(Buffer.from(x.buffer), Buffer.from(y.buffer));
    }
  });

  it("produces HWC [0,1] images, anti-aliased, at any size, and [-1,1] on request", () => {
    const scene: Scene = {
      objects: [
        { shape: "circle", colour: "red", size: "large", row: 0, col: 0 },
        { shape: "triangle", colour: "blue", size: "small", row: 2, col: 2 },
      ],
    };
    for (const size of [32, 48, 64]) {
      const img = render(scene, size);
      assert.equal(img.length, size * size * 3);
      assert.ok(img.every((v) => v >= 0 && v <= 1));
      // Edge pixels are blends: some red channel values strictly between background and red.
      assert.ok(img.some((v, i) => i % 3 === 0 && v > 0.2 && v < 0.8));
    }
    const out = new Float32Array(2 * 32 * 32 * 3);
    renderInto(scene, out, 32 * 32 * 3, 32, true);
    const ref = render(scene, 32);
    for (let i = 0; i < ref.length; i++)
      assert.ok(Math.abs(out[32 * 32 * 3 + i]! - (ref[i]! * 2 - 1)) < 1e-6);
  });

  it("paints the chosen background", () => {
    for (const bg of Object.keys(BACKGROUNDS) as BackgroundName[]) {
      const img = render({
        objects: [{ shape: "square", colour: "white", size: "small", row: 1, col: 1 }],
        background: bg,
      });
      assert.ok(Math.abs(img[0]! - BACKGROUNDS[bg][0]) < 1e-6);
    }
  });
});

describe("captions", () => {
  it("every template caption parses to constraints the scene satisfies, and fits the context", () => {
    const rng = new Rng("captions");
    for (let i = 0; i < 300; i++) {
      const scene = sampleScene(rng, { heldOut: "include" });
      const all = new Set(captionsFor(scene));
      for (const text of all) {
        const spec = parseCaption(text);
        assert.ok(spec, text);
        assert.ok(satisfies(scene, spec), `${text} vs ${JSON.stringify(scene)}`);
        assert.match(text, /^[a-z ]+$/);
        const ids = tokenize(text);
        assert.ok(ids.includes(END_ID), `too long for 16 tokens: ${text}`);
        assert.ok(!ids.includes(UNK_ID), text);
      }
      for (let level = 0; level < CAPTION_LEVELS; level++) {
        const text = caption(scene, rng, level);
        assert.ok(satisfies(scene, parseCaption(text)!), text);
        assert.ok(all.has(text), text);
      }
    }
  });

  it("parses prompts, synonyms included", () => {
    assert.deepEqual(parseCaption("a small red circle in the top left"), {
      objects: [{ size: "small", colour: "red", shape: "circle", row: 0, col: 0 }],
    });
    assert.deepEqual(parseCaption("A red triangle on the left"), {
      objects: [{ colour: "red", shape: "triangle", col: 0 }],
    });
    assert.deepEqual(parseCaption("a big purple square in the center"), {
      objects: [{ size: "large", colour: "magenta", shape: "square", row: 1, col: 1 }],
    });
    assert.deepEqual(parseCaption("a red circle above a blue square"), {
      objects: [
        { colour: "red", shape: "circle" },
        { colour: "blue", shape: "square" },
      ],
      relation: "above",
    });
    assert.deepEqual(parseCaption("a circle to the right of a triangle"), {
      objects: [{ shape: "circle" }, { shape: "triangle" }],
      relation: "right of",
    });
    assert.deepEqual(parseCaption("two green squares"), {
      objects: [
        { colour: "green", shape: "square" },
        { colour: "green", shape: "square" },
      ],
    });
    assert.equal(parseCaption("hello world"), undefined);
  });

  it("tokenizes word-level with <end> and padding, and detokenizes back", () => {
    const ids = tokenize("an orange circle and a big square", 16);
    assert.equal(ids.length, 16);
    assert.equal(detokenize(ids), "a orange circle and a large square");
    assert.equal(ids[7], END_ID);
    assert.equal(ids[15], 0);
    assert.equal(tokenize("a zebra")[1], UNK_ID);
    assert.equal(VOCAB[0], "<pad>");
    const short = tokenize("a red circle on the left", 4);
    assert.equal(short[3], END_ID);
  });
});

describe("held-out compositions and labels", () => {
  it("never samples held-out pairs for training (10k scenes), and only samples them on request", () => {
    const rng = new Rng("held-out");
    for (let i = 0; i < 10000; i++) {
      const scene = sampleScene(rng);
      assert.ok(!isHeldOut(scene), JSON.stringify(scene));
      if (i % 20 === 0) assert.ok(!isHeldOut(parseCaption(caption(scene, rng))!));
    }
    for (let i = 0; i < 500; i++) assert.ok(isHeldOut(sampleScene(rng, { heldOut: "only" })));
    assert.equal(HELD_OUT.length, 3);
  });

  it("maps classes and prompts to labels", () => {
    for (let i = 0; i < NUM_CLASSES; i++) {
      const c = classOf(i);
      assert.equal(classIndex(c.colour, c.shape), i);
    }
    assert.equal(labelForPrompt("a red circle on the left"), classIndex("red", "circle"));
    assert.equal(labelForPrompt("a circle"), undefined);
    assert.equal(labelForPrompt("a red thing"), undefined);
    assert.equal(labelForPrompt("a red circle and a blue square"), undefined);
  });
});

describe("suites", () => {
  it("are deterministic, parse back to their specs, and have scenes that satisfy them", () => {
    const rng = new Rng("suites");
    for (const name of SUITE_NAMES) {
      const a = suite(name, { n: 50, seed: 3 });
      assert.deepEqual(a, suite(name, { n: 50, seed: 3 }));
      assert.equal(a.length, 50);
      for (const p of suite(name)) {
        assert.deepEqual(parseCaption(p.text), p.spec, p.text);
        assert.equal(specText(p.spec), p.text);
        assert.equal(p.heldOut, name === "held_out", p.text);
        assert.ok(satisfies(sceneForSpec(p.spec, rng), p.spec), p.text);
      }
    }
    assert.ok(suite("colour", { includeHeldOut: true }).some((p) => p.heldOut));
    assert.deepEqual(
      suite("single_object").map((p) => p.text),
      ["a circle", "a square", "a triangle"],
    );
  });
});

describe("png", () => {
  it("round-trips to 8-bit precision and tiles grids", () => {
    const dir = mkdtempSync(join(tmpdir(), "gl-png-"));
    try {
      const img = render(sampleScene(new Rng(1), { numObjects: 2 }));
      writePng(join(dir, "a.png"), img, 32);
      const back = readPng(join(dir, "a.png"));
      assert.equal(back.width, 32);
      assert.equal(back.height, 32);
      for (let i = 0; i < img.length; i++) assert.ok(Math.abs(back.data[i]! - img[i]!) <= 0.5 / 255 + 1e-6);
      writeGrid(join(dir, "grid.png"), [img, img, img], 32, 2, 2);
      const grid = readPng(join(dir, "grid.png"));
      assert.equal(grid.width, 2 * 32 + 3 * 2);
      assert.equal(grid.height, 2 * 32 + 3 * 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
