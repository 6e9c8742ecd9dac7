// Numeric command-line flags, checked before any model loads: yargs turns `--steps five` into NaN and accepts
// `--steps 0` or `--n 100000`, which then fail deep inside sampling (pure noise, "no prompts to bind", "memory
// access out of bounds"). Each flag is named with the range it takes.

export interface NumberFlag {
  /** Whole numbers only. */
  int?: boolean;
  min?: number;
  max?: number;
  /** Why the maximum (printed with the error), e.g. "one batch holds every image". */
  why?: string;
}

function range(spec: NumberFlag): string {
  const kind = spec.int ? "an integer" : "a number";
  if (spec.min !== undefined && spec.max !== undefined) return `${kind} from ${spec.min} to ${spec.max}`;
  if (spec.min !== undefined) return `${kind} ≥ ${spec.min}`;
  if (spec.max !== undefined) return `${kind} ≤ ${spec.max}`;
  return kind;
}

/** What was typed after `--flag` (yargs has already made it NaN). */
function typed(flag: string, args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${flag}`) return args[i + 1];
    if (args[i]!.startsWith(`--${flag}=`)) return args[i]!.slice(flag.length + 3);
  }
  return undefined;
}

/** Throws for the first flag given with a value outside its range; absent flags are left to their defaults. */
export function checkNumberFlags(
  argv: Record<string, unknown>,
  specs: Record<string, NumberFlag>,
  args: readonly string[] = process.argv,
): void {
  for (const [flag, spec] of Object.entries(specs)) {
    const v = argv[flag];
    if (v === undefined) continue;
    const ok =
      typeof v === "number" &&
      Number.isFinite(v) &&
      (!spec.int || Number.isInteger(v)) &&
      (spec.min === undefined || v >= spec.min) &&
      (spec.max === undefined || v <= spec.max);
    if (!ok) {
      const shown =
        typeof v === "number" && Number.isNaN(v)
          ? `'${typed(flag, args) ?? "NaN"}' (not a number)`
          : JSON.stringify(v);
      throw new Error(`--${flag} ${shown}: expected ${range(spec)}${spec.why ? ` (${spec.why})` : ""}`);
    }
  }
}

/** The numeric flags `sample` and `glide` share (--steps is checked against the model once it is loaded). */
const SAMPLING: Record<string, NumberFlag> = {
  seed: { int: true, min: 0, max: 2 ** 32 - 1 },
  eta: { min: 0, max: 1 },
  scale: {},
};

/** Each command's numeric flags and their ranges. */
export const FLAGS = {
  sample: {
    ...SAMPLING,
    steps: { int: true, min: 1 },
    n: { int: true, min: 1, max: 256, why: "every image is sampled in one batch" },
  },
  glide: {
    ...SAMPLING,
    n: { int: true, min: 1, max: 64, why: "every image is sampled in one batch of GLIDE's model" },
  },
  train: {
    workers: { int: true, min: 1, max: 256 },
    "max-steps": { int: true, min: 1 },
    "max-minutes": { min: 0 },
  },
  models: {
    snapshot: { int: true, min: 0 },
    renders: { int: true, min: 1 },
    "samples-per-prompt": { int: true, min: 1 },
    "fd-samples": { int: true, min: 2 },
    steps: { int: true, min: 1 },
  },
} satisfies Record<string, Record<string, NumberFlag>>;
