// The README's samples of the shipped denoiser: one row per prompt (the single-object suite, then colour and
// position prompts), eight seeds per row, classifier-free guidance at s = 3, 50 DDPM steps, with the oracle's
// verdict on each row written beside the image, so the figure says what the card's accuracy means.
// Run: node --import tsx experiments/readme-figures/zoo-samples.ts [OUT_PNG] (default docs/zoo-samples.png).
import { writeFileSync } from "node:fs";
import { initEngine, tf } from "../../src/core/engine.ts";
import { seededNoise } from "../../src/core/samplers.ts";
import { score } from "../../src/data/oracle.ts";
import { encodePng, gridImage, upscaleNearest } from "../../src/data/png.ts";
import { parseCaption } from "../../src/data/world.ts";
import { resolveRuntime } from "../../src/onnx/choice.ts";
import { readImages, sampleGuided } from "../../src/pipelines/sampling.ts";
import { buildStrategy } from "../../src/strategies/registry.ts";
import { loadZoo } from "../../src/zoo/zoo.ts";

const PROMPTS = [
  "a circle",
  "a square",
  "a triangle",
  "a red circle",
  "a blue square",
  "a yellow triangle",
  "a magenta circle",
  "a large white square on the left",
];
const SEEDS = 8;
const STEPS = 50;
const SCALE = 3;
const UPSCALE = 3;

const out = process.argv[2] ?? "docs/zoo-samples.png";
await initEngine("auto");
const zoo = loadZoo({}, undefined, await resolveRuntime("auto"));
const diffusion = zoo.diffusion(String(STEPS));
const s = zoo.imageSize;
const images: Float32Array[] = [];
const lines: string[] = [];
try {
  for (const prompt of PROMPTS) {
    const binding = buildStrategy({ kind: "cfg", scale: SCALE }, { ...zoo.models, diffusion }, "cfg").bind(
      Array.from({ length: SEEDS }, () => prompt),
    );
    const xT = seededNoise("readme:zoo:x_T")(0, [SEEDS, s, s, 3]);
    const { sample } = sampleGuided(diffusion, binding, xT, { noise: seededNoise("readme:zoo") });
    const row = await readImages(sample);
    tf.dispose([sample, xT]);
    binding.dispose();
    const spec = parseCaption(prompt);
    if (!spec) throw new Error(`'${prompt}' is not a caption of the world`);
    const correct = row.filter((img) => score(img, spec).correct).length;
    lines.push(`${prompt}: ${correct}/${SEEDS} correct by the oracle`);
    process.stderr.write(`${lines.at(-1)}\n`);
    images.push(...row);
  }
} finally {
  zoo.dispose();
}
const g = upscaleNearest(gridImage(images, s, SEEDS, 1), UPSCALE);
writeFileSync(out, encodePng(g.data, g.width, g.height));
writeFileSync(
  out.replace(/\.png$/, ".txt"),
  `rows (cfg s = ${SCALE}, ${STEPS} DDPM steps, ${SEEDS} seeds):\n${lines.join("\n")}\n`,
);
