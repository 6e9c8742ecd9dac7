// The options several commands share, their choices taken from the registries (backends, runtimes, samplers,
// schedules, strategies) so that a new entry appears on the command line without another list to edit.
import type { Argv } from "yargs";
import { BACKENDS, type BackendChoice } from "../core/engine.ts";
import { SAMPLER_NAMES } from "../core/samplers/registry.ts";
import { SCHEDULES } from "../core/samplers/sampler.ts";
import { RUNTIMES, type RuntimeChoice } from "../onnx/choice.ts";
import { STRATEGY_KINDS } from "../strategies/registry.ts";

/** The options every command takes (main.ts declares them once). */
export interface Globals {
  backend: BackendChoice;
  runtime: RuntimeChoice | undefined;
}

/** One command: registers itself on the parser. */
export type Command = (y: Argv<Globals>) => Argv<Globals>;

export const backendOption = {
  choices: BACKENDS,
  default: (process.env.GUIDANCE_LAB_BACKEND ?? "auto") as BackendChoice,
  describe: "TensorFlow.js backend (env GUIDANCE_LAB_BACKEND)",
} as const;

export const runtimeOption = {
  choices: RUNTIMES,
  // Only the environment's default here: sample and sweep default to auto (after a sweep config's runtime key),
  // verify-reference to tfjs.
  default: process.env.GUIDANCE_LAB_RUNTIME as RuntimeChoice | undefined,
  describe:
    "where denoiser forwards (sample, sweep, glide) and training steps (train) run: ONNX Runtime or TensorFlow.js (env GUIDANCE_LAB_RUNTIME; default auto, verify-reference tfjs)",
} as const;

/** The options `sample` and `glide` share: the prompt, the strategy and the sampler. */
export function samplingOptions<T>(y: Argv<T>) {
  return y
    .option("prompt", { type: "string", demandOption: true })
    .option("strategy", {
      choices: STRATEGY_KINDS,
      default: "cfg",
      describe: "strategy kind (src/strategies/registry.ts)",
    })
    .option("scale", { type: "number", describe: "guidance scale (the strategy's default otherwise)" })
    .option("strategy-config", { type: "string", describe: "YAML/JSON file with a full strategy config" })
    .option("sampler", { choices: SAMPLER_NAMES, default: "ddpm" as const, describe: "sampler (registry)" })
    .option("schedule", {
      choices: SCHEDULES,
      default: "default" as const,
      describe: "timestep / σ schedule (karras, exponential: σ-space samplers only)",
    })
    .option("eta", {
      type: "number",
      describe: "η of ddim (default 0), euler_ancestral and the SDE samplers (default 1)",
    })
    .option("seed", { type: "number", default: 0 });
}
