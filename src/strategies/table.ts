// The strategy table of the README, generated from each registry entry's own fields (kind, summary, citation, the
// samplers it is defined for) and from what its binding declares it calls per step, so that the table cannot drift
// from the code (test/readme.test.ts fails when the README's copy is stale; `npx tsx tools/readme-tables.ts`
// rewrites it). The calls come from binding each entry's example config on stand-in models that are never run:
// `calls(step)` depends on the config and the step only.
import { createDiffusion } from "../core/diffusion.ts";
import { type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { buildStrategy, STRATEGIES } from "./registry.ts";
import type { GuidanceModels, ModelCalls, StrategyDef } from "./strategy.ts";

/** The step the table reports: halfway through a 50-step run of a 1000-step process. */
const MID_RUN = { index: 25, t: 499, k: 25 };

/** Models that satisfy every strategy's `requires` and are never evaluated (binding may encode prompts). */
function standIns(): GuidanceModels {
  const model = (x: Tensor4D) => ({ out: x, kind: "eps" as const });
  const text = (prompts: readonly string[]) => tf.zeros([prompts.length, 4]) as Tensor2D;
  const grad = { condGrad: (x: Tensor4D) => x };
  return {
    model,
    weak: model,
    perturbed: () => model,
    encode: () => ({}),
    classifier: grad,
    classifierLabel: () => 0,
    clip: grad,
    clipText: text,
    cleanClip: { embedImage: (x0) => tf.zeros([x0.shape[0], 4]) as Tensor2D },
    cleanClipText: text,
    guide: () => ({}),
    diffusion: createDiffusion({ schedule: "linear", steps: 1000, respacing: "50" }),
  };
}

/** "2 × model + 1 × classifier" for one step's declared network evaluations per sample. */
export function formatCalls(c: ModelCalls): string {
  const parts = (["model", "weak", "classifier", "clip"] as const)
    .filter((k) => c[k] > 0)
    .map((k) => `${c[k]} × ${k === "weak" ? "weak model" : k}`);
  return parts.length ? parts.join(" + ") : "none";
}

/** The model calls per sample of a strategy's example config at MID_RUN. */
export function exampleCalls(def: StrategyDef): ModelCalls {
  const bag = standIns();
  const bound = buildStrategy(def.example, bag).bind(["a red circle"]);
  try {
    return bound.calls(MID_RUN);
  } finally {
    bound.dispose();
  }
}

const cell = (s: string) => s.replaceAll("|", "\\|");

/** The README's table: one row per registry entry, in registry order. */
export function strategyTable(): string {
  const rows = STRATEGIES.map((d) => {
    const def = d as unknown as StrategyDef;
    const samplers = def.samplers
      ?.map((s) => (s.eta !== undefined ? `${s.name} (η = ${s.eta})` : s.name))
      .join(", ");
    return `| \`${def.kind}\` | ${cell(def.summary)} | ${cell(def.citation)} | ${samplers ?? "any"} | ${formatCalls(exampleCalls(def))} | \`${cell(JSON.stringify(def.example))}\` |`;
  });
  return [
    "| kind | what | citation | samplers | model calls per step (example config, mid-run) | example config |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows,
  ].join("\n");
}
