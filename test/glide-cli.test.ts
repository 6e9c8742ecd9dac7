// `guidance-lab glide` on the golden small GLIDE weights (as a user's converted checkpoint, with --base-flags for
// the small config) and a byte-level GPT-2 vocabulary built here: PNGs written, same images on both runtimes, and
// clear errors for missing files.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { runGlide } from "../src/cli/glide.ts";
import { initEngine } from "../src/core/engine.ts";
import { defaultGoldenDir } from "../src/core/paths.ts";
import { readPng } from "../src/data/png.ts";
import { bytesToUnicode } from "../src/nets/tokenizers.ts";
import { onnxUnavailable } from "../src/onnx/runtime.ts";

const GOLDEN = defaultGoldenDir();
const WEIGHTS = join(GOLDEN, "weights", "glide_small.safetensors");
const skip = existsSync(WEIGHTS) ? false : `golden weights not found at ${WEIGHTS}`;

describe("guidance-lab glide", { skip }, () => {
  let dir: string;
  let flags: string;
  before(async () => {
    await initEngine("wasm", { quiet: true });
    dir = mkdtempSync(join(tmpdir(), "glide-cli-"));
    // Every byte a token of its own, no merges: ids stay below 257, inside GLIDE's 50,257-token vocabulary.
    const encoder = Object.fromEntries([...bytesToUnicode().map((c, i) => [c, i]), ["<|endoftext|>", 256]]);
    writeFileSync(join(dir, "encoder.json"), JSON.stringify(encoder));
    writeFileSync(join(dir, "vocab.bpe"), "#version: 0.2\n");
    const manifest = JSON.parse(readFileSync(join(GOLDEN, "manifest.json"), "utf8")) as {
      meta: { small_glide: Record<string, unknown> };
    };
    flags = join(dir, "small.json");
    writeFileSync(flags, JSON.stringify(manifest.meta.small_glide));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const args = (out: string, runtime: "tfjs" | "onnx") => ({
    base: WEIGHTS,
    baseFlags: flags,
    bpe: dir,
    prompt: "a red cube",
    strategy: "cfg",
    scale: 3,
    // Ten steps, not two: a step from t = 999 multiplies the forward's float error by 1/√ᾱ (~10^4) in the predicted
    // x0, so a two-step run differs between runtimes by up to 0.06 (measured) while ten steps stay within 0.004.
    respacing: "10",
    upsampleRespacing: "fast27",
    sampler: "ddpm" as const,
    eta: 0,
    n: 1,
    seed: 4,
    out: join(dir, out),
    runtime,
  });

  test("writes the base PNGs and a grid; ONNX Runtime draws the same images", async (t) => {
    const tfjs = await runGlide(args("tfjs", "tfjs"));
    assert.equal(tfjs.base.length, 1, "one base image");
    assert.ok(existsSync(join(dir, "tfjs", "base-grid.png")), "grid written");
    const img = readPng(tfjs.base[0]!);
    assert.deepEqual([img.width, img.height], [64, 64], "GLIDE small makes 64×64 images");
    const why = await onnxUnavailable();
    if (why) return t.skip(`onnxruntime-node cannot load: ${why}`);
    const onnx = await runGlide(args("onnx", "onnx"));
    for (const [i, p] of onnx.base.entries()) {
      const a = readPng(p).data;
      const b = readPng(tfjs.base[i]!).data;
      let worst = 0;
      for (let k = 0; k < a.length; k++) worst = Math.max(worst, Math.abs(a[k]! - b[k]!));
      // 8-bit PNGs: float32 differences between the runtimes may move a value across one rounding boundary.
      assert.ok(
        worst <= 1 / 255 + 1e-6,
        `image ${i}: runtimes differ by ${worst} (more than one 8-bit level)`,
      );
    }
  });

  test("missing files are named", async () => {
    await assert.rejects(
      runGlide({ ...args("x", "tfjs"), bpe: join(dir, "nowhere") }),
      /--bpe .*no encoder\.json/,
    );
    await assert.rejects(
      runGlide({ ...args("x", "tfjs"), base: join(dir, "base.safetensors") }),
      /--base .*base\.safetensors: file not found/,
    );
  });
});
