import { join } from "node:path";

/** The repository root (this file is src/core/paths.ts). */
export const REPO_ROOT = join(import.meta.dirname, "..", "..");

/**
 * Reference outputs of the official PyTorch code: GUIDANCE_LAB_GOLDEN, else `../shared/golden` beside the
 * checkout (where CI and the developers' machines keep it).
 */
export function defaultGoldenDir(): string {
  return process.env.GUIDANCE_LAB_GOLDEN ?? join(REPO_ROOT, "..", "shared", "golden");
}

/** Where shipped models live: GUIDANCE_LAB_MODELS, else the repository's models/ folder (read at each call). */
export function modelsDir(): string {
  return process.env.GUIDANCE_LAB_MODELS ?? join(REPO_ROOT, "models");
}
