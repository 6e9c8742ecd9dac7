// Reading the official code's flag dictionaries (GLIDE's and guided-diffusion's script_util defaults, the golden
// manifest's meta blocks) into typed configs: one checked lookup, so every config names the flag that is wrong.

export type Flags = Record<string, unknown>;

/** raw[key] checked to be of `type`; the error names the config (`what`) and the flag. */
export function flag<T>(raw: Flags, key: string, type: "number" | "string" | "boolean", what: string): T {
  const v = raw[key];
  if (typeof v !== type)
    throw new Error(`${what} config: '${key}' must be a ${type}, got ${JSON.stringify(v)}`);
  return v as T;
}

/** A comma-separated list of numbers ("32,16,8"; empty parts dropped), as the official flags write them. */
export const numbers = (s: string): number[] =>
  s
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "")
    .map(Number);
