// Readable config errors: zod issues as one line each, naming the key path, what was expected in words, and what
// came ("steps: expected an integer, got string 'five'"), for every layer's configs (sweep configs, strategy
// configs, model.json).
import type { z } from "zod";

/** The expected type of a zod type issue in words ("an integer", "a list"), read from the failing schema. */
function expectedInWords(iss: { expected?: string; inst?: unknown }): string {
  if (iss.expected === "number" || iss.expected === "int") {
    // z.number().int() reports "number" for a string; its integer check is among the schema's checks.
    const checks = (iss.inst as { _zod?: { def?: { checks?: { _zod?: { def?: { format?: string } } }[] } } })
      ?._zod?.def?.checks;
    const int = iss.expected === "int" || checks?.some((c) => /int/.test(c._zod?.def?.format ?? ""));
    return int ? "an integer" : "a number";
  }
  const words: Record<string, string> = {
    array: "a list",
    object: "a mapping of keys",
    string: "a string",
    boolean: "true or false",
  };
  return words[iss.expected ?? ""] ?? String(iss.expected);
}

/**
 * Options for safeParse that make formatIssues' lines say what was expected and what came: type issues get
 * "expected an integer" instead of zod's "Invalid input", and each issue carries its input.
 */
export const READABLE_PARSE = {
  reportInput: true,
  error: (iss: { code?: string; expected?: string; inst?: unknown }) =>
    iss.code === "invalid_type" ? { message: `expected ${expectedInWords(iss)}` } : undefined,
} as const;

/** What a config held, for an error message: `string 'five'`, `number 1.5`, `a list`. */
function described(v: unknown): string {
  if (typeof v === "string") return `string '${v.length > 40 ? `${v.slice(0, 40)}…` : v}'`;
  if (typeof v === "number" || typeof v === "boolean") return `${typeof v} ${v}`;
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  return typeof v === "object" ? "a mapping" : String(v);
}

/** Readable zod issues, one per line, each naming its key path (and, with READABLE_PARSE, what came). */
export function formatIssues(err: z.ZodError, source: string): string {
  const at = (path: readonly PropertyKey[]) => (path.length ? path.map(String).join(".") : "(top level)");
  const got = (i: object) => ("input" in i && i.input !== undefined ? `, got ${described(i.input)}` : "");
  return err.issues
    .flatMap((i) => {
      // Name each unknown key itself rather than the object that holds it.
      if (i.code === "unrecognized_keys")
        return i.keys.map((k) => `${source}: ${at([...i.path, k])}: unknown key`);
      if (i.code === "invalid_union") {
        // A value of the right type that failed inside its alternative (a list with a bad element): that issue.
        const inner = i.errors.find((branch) => branch.length > 0 && branch.every((b) => b.path.length > 0));
        if (inner) {
          const b = inner[0]!;
          return [`${source}: ${at([...i.path, ...b.path])}: ${b.message}${got(b)}`];
        }
        // Otherwise "Invalid input" says nothing: list what each alternative expected of the value itself.
        const expected = [
          ...new Set(
            i.errors.flatMap((branch) =>
              branch
                .filter((b) => b.path.length === 0 && b.message.startsWith("expected "))
                .map((b) => b.message),
            ),
          ),
        ];
        if (expected.length)
          return [
            `${source}: ${at(i.path)}: ${expected.join(" or ").replace(/ or expected /g, " or ")}${got(i)}`,
          ];
      }
      const message = ["invalid_type", "too_small", "too_big", "invalid_value"].includes(i.code)
        ? `${i.message}${got(i)}`
        : i.message;
      return [`${source}: ${at(i.path)}: ${message}`];
    })
    .join("\n");
}
