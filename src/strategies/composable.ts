// Composable diffusion (Liu et al. 2022, "Compositional Visual Generation with Composable Diffusion Models", ECCV,
// arXiv 2206.01714, eq. 10 for conjunction and §4.2 for negation): a prompt "A AND B NOT C" is a product of
// conditionals, whose score is the unconditional one plus each concept's weighted classifier-free direction:
//   eps_g = eps_u + Σ_i w_i·(eps(x_t, c_i) − eps_u)
// Prompt syntax: terms joined by " AND " (weight +w) or " NOT " (weight −w); a term may end with "::w" to set its
// own |w| (default: `scale`). All terms of all samples plus one unconditional row per sample go through ONE
// batched forward; the variance comes from each sample's first term (as the authors' GLIDE code keeps the first
// row's variance channels). A single term of weight 1 is the conditional model (one call); outside the guidance
// window a step uses the first term's conditional prediction (one call).
import { z } from "zod";
import type { Tensor1D, Tensor4D } from "../core/engine.ts";
import { tf } from "../core/engine.ts";
import type { Prediction, StepInfo } from "../core/types.ts";
import {
  checkWindow,
  concatCond,
  disposeCond,
  encodeFor,
  inWindow,
  NO_CALLS,
  predRows,
  scaleSchema,
  tidyPred,
  timesteps,
  unconditionalPrompts,
  windowFields,
  withOut,
} from "./shared.ts";
import type { GuidedSampling, StrategyDef } from "./strategy.ts";

export const composableSchema = z
  .object({
    kind: z.literal("composable"),
    /** Weight of every term without an explicit "::w" (GLIDE's convention: 1 alone = conditional). */
    scale: scaleSchema({ default: 3, min: 0 }),
    ...windowFields,
  })
  .strict()
  .superRefine(checkWindow);
export type ComposableConfig = z.infer<typeof composableSchema>;

export interface WeightedTerm {
  text: string;
  weight: number;
}

/** Splits "A AND B::2 NOT C" into weighted terms; NOT negates the weight. */
export function parseComposablePrompt(prompt: string, defaultWeight: number): WeightedTerm[] {
  const parts = prompt.split(/\s+(AND|NOT)\s+/);
  const terms: WeightedTerm[] = [];
  for (let i = 0; i < parts.length; i += 2) {
    const op = i === 0 ? "AND" : parts[i - 1];
    let text = parts[i]!.trim();
    let weight = defaultWeight;
    const m = /^(.*?)::\s*([-+]?\d*\.?\d+(?:e[-+]?\d+)?)$/i.exec(text);
    if (m) {
      text = m[1]!.trim();
      weight = Number(m[2]);
    }
    if (text === "" && parts.length > 1) {
      throw new Error(`composable prompt '${prompt}': term ${i / 2 + 1} is empty`);
    }
    terms.push({ text, weight: op === "NOT" ? -weight : weight });
  }
  return terms;
}

export const composableStrategy: StrategyDef<ComposableConfig> = {
  kind: "composable",
  summary: "weighted prompts with AND / NOT, eps_u + Σ w_i (eps_i − eps_u)",
  citation: "Liu et al. 2022 (Compositional Visual Generation with Composable Diffusion Models) eq. 10",
  example: { kind: "composable", scale: 3 },
  schema: () => composableSchema,
  requires: () => ["model", "encode"],
  build: (config, models) => ({
    config,
    bind: (prompts): GuidedSampling => {
      const b = prompts.length;
      const terms = prompts.map((p) => parseComposablePrompt(p, config.scale));
      const texts = terms.flatMap((ts) => ts.map((t) => t.text));
      const n = texts.length;
      const enabled = !terms.every((ts) => ts.length === 1 && ts[0]!.weight === 1);
      const first = encodeFor(
        "composable",
        models,
        terms.map((ts) => ts[0]!.text),
      );
      let all: ReturnType<typeof concatCond> | undefined;
      let rows: Tensor1D | undefined;
      const starts: number[] = [];
      if (enabled) {
        const termCond = models.encode(texts);
        const uncond = models.encode(unconditionalPrompts(models, b));
        all = concatCond([termCond, uncond]);
        disposeCond(termCond);
        disposeCond(uncond);
        const index: number[] = [];
        terms.forEach((ts, i) => {
          starts.push(index.length);
          for (let j = 0; j < ts.length; j++) index.push(i);
        });
        for (let i = 0; i < b; i++) index.push(i);
        rows = tf.tensor1d(index, "int32");
      }
      const active = (step: StepInfo) => enabled && inWindow(config, step);
      return {
        denoise: (x, step) =>
          tidyPred(() => {
            if (!active(step)) return models.model(x, timesteps(x.shape[0], step), first);
            const xs = tf.gather(x, rows!) as Tensor4D;
            const out = models.model(xs, timesteps(n + b, step), all!);
            const guided: Prediction[] = terms.map((ts, i) => {
              const epsU = predRows(out, n + i, 1).out;
              let acc = epsU;
              ts.forEach((term, j) => {
                const epsI = predRows(out, starts[i]! + j, 1).out;
                acc = tf.add(acc, tf.mul(term.weight, tf.sub(epsI, epsU))) as Tensor4D;
              });
              return withOut(predRows(out, starts[i]!, 1), acc);
            });
            const cat = (ts: Tensor4D[]) => tf.concat(ts) as Tensor4D;
            const eps = cat(guided.map((g) => g.out));
            return guided[0]!.varValues
              ? { out: eps, kind: out.kind, varValues: cat(guided.map((g) => g.varValues!)) }
              : { out: eps, kind: out.kind };
          }),
        calls: (step) => ({ ...NO_CALLS, model: active(step) ? (n + b) / b : 1 }),
        dispose() {
          disposeCond(first);
          disposeCond(all);
          rows?.dispose();
        },
      };
    },
  }),
  neutral: (config) => ({ config: { ...config, scale: 1 }, equals: "conditional" }),
};
