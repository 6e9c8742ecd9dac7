import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  analyse,
  boxBlur3,
  DEGRADATIONS,
  formatAccuracyReport,
  oracleAccuracyReport,
  score,
} from "../src/data/oracle.ts";
import { SUITE_NAMES } from "../src/data/suites.ts";
import {
  BACKGROUNDS,
  type BackgroundName,
  parseCaption,
  render,
  type Scene,
  type SceneObject,
  sampleScene,
} from "../src/data/world.ts";
import { hashSeed, Rng } from "../src/util/rng.ts";

const key = (o: Pick<SceneObject, "shape" | "colour" | "size" | "row" | "col">) =>
  `${o.size} ${o.colour} ${o.shape} @${o.row},${o.col}`;
const keys = (objs: Pick<SceneObject, "shape" | "colour" | "size" | "row" | "col">[]) => objs.map(key).sort();

describe("oracle", () => {
  it("is >= 99% exact on 1,000 clean renders of every suite", (t) => {
    const report = oracleAccuracyReport({
      n: 1000,
      degradations: ["clean"],
      seed: hashSeed("oracle-test-clean"),
    });
    for (const line of formatAccuracyReport(report).split("\n")) t.diagnostic(line);
    assert.equal(report.rows.length, SUITE_NAMES.length);
    for (const row of report.rows) {
      assert.equal(row.n, 1000);
      assert.ok(row.accuracy >= 0.99, `${row.suite}: ${row.accuracy}`);
    }
  });

  it("reports accuracy under noise and blur, with reasonable floors", (t) => {
    const report = oracleAccuracyReport({
      n: 200,
      degradations: DEGRADATIONS.filter((d) => d !== "clean"),
      seed: hashSeed("oracle-test-degraded"),
    });
    for (const line of formatAccuracyReport(report).split("\n")) t.diagnostic(line);
    for (const row of report.rows) {
      const floor = row.degradation === "noise0.1" ? 0.85 : 0.9;
      assert.ok(row.accuracy >= floor, `${row.suite} ${row.degradation}: ${row.accuracy}`);
    }
  });

  it("recovers whole scenes exactly, on every background and at several sizes", () => {
    const rng = new Rng("oracle-scenes");
    const backgrounds = Object.keys(BACKGROUNDS) as BackgroundName[];
    for (const size of [32, 48, 64]) {
      for (let i = 0; i < 150; i++) {
        const scene = sampleScene(rng, { heldOut: "include", backgrounds });
        const found = analyse(render(scene, size), size);
        assert.deepEqual(keys(found), keys(scene.objects), `${size}px ${JSON.stringify(scene)}`);
      }
    }
  });

  it("reads [-1, 1] images with the signed flag", () => {
    const scene = sampleScene(new Rng(4), { numObjects: 2 });
    const img = render(scene);
    const signed = img.map((v) => v * 2 - 1);
    assert.deepEqual(keys(analyse(signed, 32, { signed: true })), keys(scene.objects));
  });

  it("ignores specks and tolerates colour drift", () => {
    const rng = new Rng("oracle-robust");
    for (let i = 0; i < 100; i++) {
      const scene = sampleScene(rng, { heldOut: "include" });
      const img = render(scene);
      // Shift every pixel's colour a little, as an imperfect sampler would.
      const shift = [0.06 * (rng.next() - 0.5), 0.06 * (rng.next() - 0.5), 0.06 * (rng.next() - 0.5)];
      for (let p = 0; p < img.length; p++)
        img[p] = Math.min(1, Math.max(0, img[p]! + shift[p % 3]! + 0.05 * rng.normal()));
      // Two-pixel specks of a saturated colour in background corners.
      for (const [x, y] of [
        [0, 0],
        [30, 31],
      ] as const) {
        for (const dx of [0, 1]) img.set([1, 1, 0], (y * 32 + x + dx) * 3);
      }
      assert.deepEqual(keys(analyse(img, 32)), keys(scene.objects), JSON.stringify(scene));
    }
  });

  it("scores per attribute and overall", () => {
    const scene: Scene = {
      objects: [
        { shape: "circle", colour: "red", size: "large", row: 1, col: 0 },
        { shape: "square", colour: "blue", size: "small", row: 1, col: 2 },
      ],
    };
    const img = render(scene);
    const good = score(img, parseCaption("a red circle to the left of a blue square")!);
    assert.ok(good.correct && good.relation && good.count);
    const swapped = score(img, parseCaption("a blue circle and a red square")!);
    assert.equal(swapped.correct, false);
    assert.equal(swapped.count, true);
    assert.ok(!swapped.colour || !swapped.shape);
    const wrongRelation = score(img, parseCaption("a red circle above a blue square")!);
    assert.equal(wrongRelation.relation, false);
    assert.equal(wrongRelation.colour, true);
    const one = score(img, parseCaption("a large red circle on the left")!);
    assert.equal(one.count, false);
    assert.equal(one.correct, false);
    assert.ok(one.shape && one.colour && one.size && one.position);
    const blurred = score(boxBlur3(img, 32), parseCaption("a small blue square on the right")!);
    assert.ok(blurred.shape && blurred.size && blurred.position && !blurred.count);
  });
});
