// Which runtime runs the denoisers' forwards: ONNX Runtime (fast, forward-only) or TensorFlow.js (everything,
// gradients included). Gradient guidance always differentiates its guidance model in TensorFlow.js.
import { onnxAvailable } from "./runtime.ts";

export const RUNTIMES = ["auto", "onnx", "tfjs"] as const;
export type RuntimeChoice = (typeof RUNTIMES)[number];
export type Runtime = "onnx" | "tfjs";

export async function resolveRuntime(choice: RuntimeChoice, quiet = false): Promise<Runtime> {
  if (choice === "tfjs") return "tfjs";
  const why = await onnxAvailable();
  if (why === undefined) {
    if (!quiet)
      process.stderr.write(
        `[runtime] denoiser forwards on ONNX Runtime (${choice === "auto" ? "auto: it loads" : "requested"})\n`,
      );
    return "onnx";
  }
  if (choice === "onnx") throw new Error(`--runtime onnx: onnxruntime-node does not load here (${why})`);
  if (!quiet)
    process.stderr.write(
      `[runtime] denoiser forwards on TensorFlow.js (onnxruntime-node does not load: ${why})\n`,
    );
  return "tfjs";
}
