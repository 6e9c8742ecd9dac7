// Which runtime runs the denoisers' forwards, the guidance gradients, the metrics' forwards and the trainer's steps:
// ONNX Runtime (fast; gradients and training steps replay what TensorFlow.js traced, src/onnx/guide-grad.ts and
// src/train/onnx-step.ts) or TensorFlow.js (everything). `auto` (the default of sample, sweep and train) takes ONNX
// Runtime whenever onnxruntime-node loads: every UNet kind exports, and its forward agrees with TensorFlow.js's to
// ~2e-6 relative.

export const RUNTIMES = ["auto", "onnx", "tfjs"] as const;
export type RuntimeChoice = (typeof RUNTIMES)[number];
export type Runtime = "onnx" | "tfjs";

/**
 * Resolves a choice (default `auto`) and says on stderr what it picked and why, unless quiet. The choice may come
 * from the environment (GUIDANCE_LAB_RUNTIME) unchecked by the CLI parser, so unknown values are errors here.
 */
export async function resolveRuntime(choice: RuntimeChoice = "auto", quiet = false): Promise<Runtime> {
  if (!(RUNTIMES as readonly string[]).includes(choice))
    throw new Error(
      `unknown runtime '${choice}' (--runtime or GUIDANCE_LAB_RUNTIME): one of ${RUNTIMES.join(", ")}`,
    );
  if (choice === "tfjs") return "tfjs";
  // Imported here so that the CLI's argument parsing does not load the tensor engine.
  const { onnxUnavailable, providersFromEnv } = await import("./runtime.ts");
  const why = await onnxUnavailable();
  if (why === undefined) {
    const providers = providersFromEnv();
    if (!quiet)
      process.stderr.write(
        `[runtime] denoiser forwards on ONNX Runtime, providers ${providers.join(", ")} (${choice === "auto" ? "auto: onnxruntime-node loads; --runtime tfjs to opt out" : "requested"})\n`,
      );
    return "onnx";
  }
  if (choice === "onnx") throw new Error(`--runtime onnx: onnxruntime-node does not load here (${why})`);
  if (!quiet)
    process.stderr.write(
      `[runtime] denoiser forwards on TensorFlow.js (auto: onnxruntime-node does not load: ${why})\n`,
    );
  return "tfjs";
}
