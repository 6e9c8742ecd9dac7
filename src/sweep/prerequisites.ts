// What each metric needs from the config, checked before any model loads: a metric that cannot be computed on
// this config's cells would otherwise fail after the first cell was sampled. What a metric needs from the models
// (an evaluation CLIP, a classifier) is checked by the metric registry once the models are loaded, still before
// sampling (checkMetrics in src/metrics/index.ts).
import type { SweepConfig } from "./config.ts";

/** Improved precision/recall's k (Kynkäänniemi et al. 2019; the metric registry's default). */
const PR_K = 3;

/** Throws naming the metric and the config key that would have to change. */
export function checkPrerequisites(config: SweepConfig, source: string): void {
  const problems: string[] = [];
  const uses = (m: string) => config.metrics.includes(m);
  const n = config.prompts.length * config.samplesPerPrompt;
  const world = config.prompts.filter((p) => p.spec).length * config.samplesPerPrompt;
  const freeText = config.prompts.findIndex((p) => !p.spec);
  if (uses("precision_recall")) {
    // Each set's manifold needs every vector's k-th nearest neighbour within its own set.
    if (n < PR_K + 1)
      problems.push(
        `precision_recall needs at least ${PR_K + 1} samples per cell (its k = ${PR_K} nearest neighbours plus the sample), but ${config.prompts.length} prompt(s) × samplesPerPrompt ${config.samplesPerPrompt} = ${n}: raise samplesPerPrompt`,
      );
    else if (world < PR_K + 1)
      problems.push(
        `precision_recall needs at least ${PR_K + 1} real images, one per sample of a world prompt, but the config has ${world}: use prompts from the world (suites or captions), or raise samplesPerPrompt`,
      );
  }
  // Distances to the real set: the real images are rendered from world prompts, one per sample.
  for (const m of ["fd", "kid"].filter(uses))
    if (world < 2)
      problems.push(
        `${m} needs at least 2 real images, one per sample of a world prompt, but the config has ${world}: use prompts from the world (suites or captions)`,
      );
  if (uses("prompt_accuracy") && freeText >= 0)
    problems.push(
      `prompt_accuracy judges prompts from the world (suites or captions the oracle can parse), but prompt ${freeText} ('${config.prompts[freeText]!.text}') is free text: remove prompt_accuracy from metrics or the prompt from prompts`,
    );
  if (problems.length) throw new Error(`${source}: metrics: ${problems.join("; ")}`);
}
