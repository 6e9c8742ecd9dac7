// Model cards: models/<name>/CARD.md is written from what the folder holds (model.json from the trainer's export,
// eval.json from `models evaluate`) and the recipe kept in experiments/zoo/, so a card never states a figure that
// the evaluation did not produce.
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { REPO_ROOT } from "../core/paths.ts";
import type { Evaluation } from "./evaluate/index.ts";
import { type ModelInfo, modelInfo } from "./registry.ts";

const ROLE: Record<ModelInfo["task"], string> = {
  denoiser:
    "Text-conditional denoiser in GLIDE's form (text tokens prepended to the attention keys/values, pooled text embedding added to the time embedding), learned-range variance, trained with 20% empty captions: one model serves conditional, unconditional and classifier-free-guided sampling.",
  classifier:
    "Noised classifier (guided-diffusion's EncoderUNetModel with attention pooling, timestep-conditioned) over the world's 24 colour-shape classes, for classifier guidance.",
  "noised-clip":
    "Noised CLIP in GLIDE's form (ViT image encoder on (x_t, t), causal text transformer), trained contrastively on q_sample-noised renders, for CLIP guidance.",
  "eval-clip":
    "Evaluation CLIP, trained on clean renders only, with its own seed and architecture (a shallower convolutional image tower without timestep input or self-attention); never used for guidance. CLIP score, diversity and Fréchet distance use it.",
};

/** The card's opening line: the task's role, what a denoiser predicts, and for the noised CLIP which image tower it has. */
function role(info: ModelInfo): string {
  if (info.task === "denoiser" && info.config.model.prediction === "v") {
    return `${ROLE.denoiser} It predicts v = √ᾱ·ε − √(1−ᾱ)·x0 (Salimans & Ho 2022) where GLIDE predicts ε, and is presented to the samplers as ε.`;
  }
  if (info.task === "noised-clip" && info.config.model.tower === "conv") {
    return "Noised CLIP: GLIDE's causal text transformer and, as image encoder on (x_t, t), the noised classifier's timestep-conditioned EncoderUNet with attention pooling (GLIDE's ViT tower, with 4×4 patches, never told the world's 5–9 px circles from squares); trained contrastively on q_sample-noised renders, for CLIP guidance.";
  }
  if (info.task === "eval-clip" && info.config.name !== "eval-clip") {
    return "Clean-image CLIP for guidance: the evaluation CLIP's recipe (clean renders only, the same architecture) with another seed, so that the `clean-clip` strategy's guide (its gradient on the denoiser's predicted x0, as CLIP guidance worked before GLIDE) never shares weights with the CLIP that scores the samples; never used for evaluation.";
  }
  return ROLE[info.task];
}

/** Where the last session computed gradients, as model.json records it. */
function trainedOn(info: ModelInfo): string {
  const { runtime, workers } = info.config;
  if (runtime === "onnx")
    return "gradients on ONNX Runtime, the traced TensorFlow.js step, in the last session";
  return `wasm backend, worker threads${workers !== undefined ? `; ${workers} in the last session` : ""}`;
}

function fmt(key: string, v: number): string {
  if (!Number.isFinite(v)) return "n/a";
  if (key.includes("fd_")) return v.toFixed(4);
  // A gain is a difference of two accuracies: percentage points, signed.
  if (key.includes("_gain_")) return `${v >= 0 ? "+" : "−"}${Math.abs(100 * v).toFixed(1)} points`;
  return `${(100 * v).toFixed(1)}%`;
}

export function evaluationPath(info: ModelInfo): string {
  return join(info.dir, "eval.json");
}

export function readEvaluation(info: ModelInfo): Evaluation | undefined {
  const p = evaluationPath(info);
  return existsSync(p) ? (JSON.parse(readFileSync(p, "utf8")) as Evaluation) : undefined;
}

export function cardText(info: ModelInfo, evaluation: Evaluation | undefined, note = ""): string {
  const recipePath = join(REPO_ROOT, "experiments", "zoo", `${info.config.name}.yaml`);
  const recipe = existsSync(recipePath) ? readFileSync(recipePath, "utf8").trim() : "(recipe file not found)";
  const lines = [
    `# ${info.name}`,
    "",
    role(info),
    "",
    "| | |",
    "| --- | --- |",
    `| task | ${info.task} |`,
    `| recipe | \`${relative(REPO_ROOT, recipePath)}\` (\`guidance-lab train ${info.config.name}\`) |`,
    `| training steps | ${info.step}${info.config.initFrom ? ` (this run started from an export at step ${info.config.initFrom.step}, with a fresh optimizer)` : ""} |`,
    `| training wall time | ${(info.wallSeconds / 3600).toFixed(2)} h on this project's 2-core CPU machine (${trainedOn(info)}) |`,
    `| weights | model.safetensors, float16, ${(statSync(join(info.dir, "model.safetensors")).size / 1e6).toFixed(2)} MB |`,
    `| world | ${info.config.world.size}×${info.config.world.size} renders, diffusion ${info.config.diffusion.schedule} ${info.config.diffusion.steps} steps |`,
    "",
  ];
  if (note) lines.push(note, "");
  lines.push("## Evaluation", "");
  if (!evaluation || evaluation.step !== info.step) {
    lines.push(`Not evaluated at this step yet: run \`guidance-lab models evaluate ${info.name}\`.`, "");
  } else {
    lines.push(
      `From \`guidance-lab models evaluate ${info.name}\` (${evaluation.seconds.toFixed(0)} s; settings ${JSON.stringify(evaluation.settings)}).`,
      "",
      "| figure | value | what |",
      "| --- | --- | --- |",
      ...evaluation.figures.map((f) => `| ${f.key} | ${fmt(f.key, f.value)} | ${f.description} |`),
      "",
    );
    if (evaluation.curve) {
      const c = evaluation.curve;
      lines.push(
        "Accuracy versus t (renders q_sample-noised to t):",
        "",
        `| t | ${c.t.join(" | ")} |`,
        `| --- | ${c.t.map(() => "---").join(" | ")} |`,
        `| top-1 | ${c.accuracy.map((a) => `${(100 * a).toFixed(1)}%`).join(" | ")} |`,
        "",
      );
    }
  }
  lines.push("## Recipe", "", "```yaml", recipe, "```", "");
  return `${lines.join("\n")}`;
}

/** Writes eval.json (when given) and CARD.md for a shipped model. */
export function writeCard(name: string, dir: string, evaluation?: Evaluation, note = ""): string {
  const info = modelInfo(name, dir);
  if (evaluation) writeFileSync(evaluationPath(info), `${JSON.stringify(evaluation, null, 2)}\n`);
  const path = join(info.dir, "CARD.md");
  const notePath = join(info.dir, "NOTE.md");
  const extra = note || (existsSync(notePath) ? readFileSync(notePath, "utf8").trim() : "");
  writeFileSync(path, cardText(info, evaluation ?? readEvaluation(info), extra));
  return path;
}
