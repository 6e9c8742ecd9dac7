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
function typed(flag: string): string | undefined {
  const args = process.argv;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${flag}`) return args[i + 1];
    if (args[i]!.startsWith(`--${flag}=`)) return args[i]!.slice(flag.length + 3);
  }
  return undefined;
}

/** Throws for the first flag given with a value outside its range; absent flags are left to their defaults. */
export function checkNumberFlags(argv: Record<string, unknown>, specs: Record<string, NumberFlag>): void {
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
          ? `'${typed(flag) ?? "NaN"}' (not a number)`
          : JSON.stringify(v);
      throw new Error(`--${flag} ${shown}: expected ${range(spec)}${spec.why ? ` (${spec.why})` : ""}`);
    }
  }
}
