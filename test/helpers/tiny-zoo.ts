// A tiny zoo for tests: models trained for one step at 16×16 and installed under `dir`/models by their zoo names.
import { cpSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { train } from "../../src/train/trainer.ts";

const TINY: Record<string, { task: string; model: string }> = {
  denoiser: {
    task: "denoiser",
    model:
      "{ modelChannels: 32, channelMult: [1, 2], numResBlocks: 1, attentionResolutions: [8], xfWidth: 32, xfLayers: 1, xfHeads: 2 }",
  },
  classifier: {
    task: "classifier",
    model:
      "{ modelChannels: 32, channelMult: [1, 2], numResBlocks: 1, attentionResolutions: [8], numHeadChannels: 32 }",
  },
  "noised-clip": {
    task: "noised-clip",
    model: "{ patchSize: 4, embedDim: 16, headState: 8, heads: 2, textBlocks: 1, imageBlocks: 1 }",
  },
  "eval-clip": {
    task: "eval-clip",
    model:
      "{ modelChannels: 32, channelMult: [1, 2], numResBlocks: 1, attentionResolutions: [8], numHeadChannels: 32, embedDim: 16, xfWidth: 16, xfLayers: 1, xfHeads: 2 }",
  },
};

/** Trains (one step each) and installs the named tiny models; returns the models folder. */
export async function makeTinyZoo(dir: string, names: readonly string[] = ["denoiser"]): Promise<string> {
  const models = join(dir, "models");
  for (const name of names) {
    const tiny = TINY[name];
    if (!tiny) throw new Error(`makeTinyZoo: no tiny recipe for '${name}'`);
    const recipe = join(dir, `${name}.yaml`);
    writeFileSync(
      recipe,
      `name: ${name}\ntask: ${tiny.task}\nsteps: 1\nbatchSize: 2\nmodel: ${tiny.model}\nworld: { size: 16 }\n`,
    );
    const run = join(dir, `run-${name}`);
    await train(recipe, { out: run, workers: 1, backend: "wasm" });
    mkdirSync(join(models, name), { recursive: true });
    for (const f of ["model.safetensors", "model.json"]) cpSync(join(run, f), join(models, name, f));
  }
  return models;
}
