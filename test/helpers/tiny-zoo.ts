// A tiny zoo for tests: a text-conditional denoiser trained for one step, installed as models/denoiser in `dir`.
import { cpSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { train } from "../../src/train/trainer.ts";

export async function makeTinyZoo(dir: string): Promise<string> {
  const recipe = join(dir, "tiny.yaml");
  writeFileSync(
    recipe,
    `name: tiny
task: denoiser
steps: 1
batchSize: 2
model: { modelChannels: 32, channelMult: [1, 2], numResBlocks: 1, attentionResolutions: [8], xfWidth: 32, xfLayers: 1, xfHeads: 2 }
world: { size: 16 }
`,
  );
  const run = join(dir, "run");
  await train(recipe, { out: run, workers: 1, backend: "wasm" });
  const models = join(dir, "models");
  mkdirSync(join(models, "denoiser"), { recursive: true });
  for (const f of ["model.safetensors", "model.json"]) cpSync(join(run, f), join(models, "denoiser", f));
  return models;
}
