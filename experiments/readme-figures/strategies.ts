// The README's strategy rows: every registry strategy on one prompt at three scales (rows) and four seeds
// (columns), the same x_T and sampler noise in every image of a column, so rows differ only by the guidance.
// Run: node --import tsx experiments/readme-figures/strategies.ts [OUT_DIR] [ROW ...] (default docs/strategies, all
// rows; naming rows renders only those and updates their lines in strategies.txt). Each row samples with the first
// sampler its strategy declares (cfg++: ddim at η = 0), else ddpm.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { initEngine, tf } from "../../src/core/engine.ts";
import { seededNoise } from "../../src/core/samplers.ts";
import { encodePng, gridImage, upscaleNearest } from "../../src/data/png.ts";
import { resolveRuntime } from "../../src/onnx/choice.ts";
import { readImages, sampleGuided, samplerDiffusion } from "../../src/pipelines/sampling.ts";
import { buildStrategy, strategyDef } from "../../src/strategies/registry.ts";
import { loadZoo } from "../../src/zoo/zoo.ts";

const PROMPT = "a red circle";
const SEEDS = 4;
const STEPS = 50;
const UPSCALE = 3;

/** Three settings per strategy: its neutral point (where it has one), a moderate and a strong scale. */
const ROWS: { name: string; configs: Record<string, unknown>[] }[] = [
  { name: "none", configs: [{ kind: "none" }] },
  { name: "unconditional", configs: [{ kind: "unconditional" }] },
  ...(
    [
      ["cfg", [1, 3, 6], {}],
      ["classifier", [0, 1, 4], {}],
      ["clip", [0, 3, 10], {}],
      ["negative", [1, 3, 6], { negativePrompt: "a blue square" }],
      ["composable", [1, 3, 6], {}],
      ["cfg-rescale", [1, 3, 6], { phi: 0.7 }],
      ["apg", [1, 3, 6], {}],
      ["cfg++", [0, 0.4, 0.8], {}],
      ["autoguidance", [1, 2, 4], {}],
      ["cfg-zero-star", [1, 3, 6], {}],
      ["tcfg", [1, 3, 6], {}],
      ["mambo-g", [1, 3, 6], {}],
    ] as const
  ).map(([kind, scales, extra]) => ({
    name: kind,
    configs: scales.map((scale) => ({ kind, scale, ...extra })),
  })),
  {
    name: "dynamic-threshold",
    configs: [3, 6, 10].map((scale) => ({ kind: "dynamic-threshold", base: { kind: "cfg", scale } })),
  },
  {
    name: "fdg",
    configs: [
      [1, 1],
      [3, 1.5],
      [6, 3],
    ].map(([scale, lowScale]) => ({ kind: "fdg", scale, lowScale })),
  },
  ...(
    [
      ["pag", 1, [0, 3, 6]],
      ["seg", 1, [0, 3, 6]],
      ["slg", 3, [0, 2.8, 5]],
    ] as const
  ).map(([kind, scale, ws]) => ({
    name: kind,
    configs: ws.map((perturbScale) => ({ kind, scale, perturbScale })),
  })),
  {
    name: "apg-mix",
    configs: [
      [1, 1],
      [3, 6],
      [6, 10],
    ].map(([scale, apgScale]) => ({ kind: "apg-mix", scale, apgScale })),
  },
];

const [outArg, ...only] = process.argv.slice(2);
const unknown = only.filter((n) => !ROWS.some((r) => r.name === n));
if (unknown.length) {
  throw new Error(
    `strategies figure: unknown rows ${unknown.join(", ")} (known: ${ROWS.map((r) => r.name).join(", ")})`,
  );
}

const out = outArg ?? join("docs", "strategies");
await initEngine("auto");
const zoo = loadZoo({}, undefined, await resolveRuntime("auto"));
mkdirSync(out, { recursive: true });
const T = zoo.diffusion("").numTimesteps;
const s = zoo.imageSize;
const log = new Map<string, string>();
const logFile = join(out, "strategies.txt");
if (only.length && existsSync(logFile)) {
  for (const line of readFileSync(logFile, "utf8").split("\n").filter(Boolean)) {
    log.set(line.slice(0, line.indexOf(":")), line);
  }
}
try {
  for (const row of ROWS.filter((r) => !only.length || only.includes(r.name))) {
    const declared = strategyDef(String(row.configs[0]!.kind)).samplers?.[0];
    const choice = {
      sampler: declared?.name ?? "ddpm",
      steps: STEPS,
      ...(declared?.eta !== undefined ? { eta: declared.eta } : {}),
    };
    const diffusion = samplerDiffusion(choice, T, (r) => zoo.diffusion(r));
    const images: Float32Array[] = [];
    const t0 = performance.now();
    for (const config of row.configs) {
      const binding = buildStrategy(config, { ...zoo.models, diffusion }, row.name).bind(
        Array.from({ length: SEEDS }, () => PROMPT),
      );
      const xT = seededNoise("readme:x_T")(0, [SEEDS, s, s, 3]);
      const { sample } = sampleGuided(diffusion, binding, xT, { ...choice, noise: seededNoise("readme") });
      images.push(...(await readImages(sample)));
      tf.dispose([sample, xT]);
      binding.dispose();
    }
    const g = upscaleNearest(gridImage(images, s, SEEDS, 1), UPSCALE);
    writeFileSync(join(out, `strategy-${row.name}.png`), encodePng(g.data, g.width, g.height));
    const line = `${row.name}: ${row.configs.map((c) => JSON.stringify(c)).join(" | ")}, ${choice.sampler} ${STEPS} steps${declared?.eta !== undefined ? ` η ${declared.eta}` : ""} (${((performance.now() - t0) / 1000).toFixed(1)} s)`;
    log.set(row.name, line);
    process.stderr.write(`${line}\n`);
  }
} finally {
  zoo.dispose();
}
writeFileSync(logFile, `${[...log.values()].join("\n")}\n`);
