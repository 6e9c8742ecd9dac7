// The folders of src/ depend in one direction: docs/architecture.md lists them in layers (bottom last), and every
// import of every src file (static, dynamic, type-only, re-export; read by TypeScript's own pre-parser) must stay
// in its folder or point to a lower layer. The failure lists each offending file and import.
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { test } from "node:test";
import ts from "typescript";

const ROOT = resolve(import.meta.dirname, "..");
const SRC = join(ROOT, "src");

/** The ```layers block of docs/architecture.md: folder → rank (0 = bottom). */
function readLayers(markdown: string): Map<string, number> {
  const block = /```layers\n([\s\S]*?)```/.exec(markdown);
  if (!block?.[1]) throw new Error("docs/architecture.md: no ```layers block");
  const rows = block[1].split("\n").filter((l) => l.trim() !== "");
  const rank = new Map<string, number>();
  rows.forEach((row, i) => {
    const names = row.split(":")[0]?.trim().split(/\s+/) ?? [];
    for (const n of names) {
      if (rank.has(n)) throw new Error(`docs/architecture.md: folder ${n} is listed twice`);
      rank.set(n, rows.length - 1 - i);
    }
  });
  return rank;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sourceFiles(p);
    return /\.(ts|mts|mjs|js)$/.test(name) && !name.endsWith(".d.ts") ? [p] : [];
  });
}

const folderOf = (file: string): string => relative(SRC, file).split(sep)[0] ?? "";

interface Edge {
  file: string;
  spec: string;
  from: string;
  to: string;
}

function folderEdges(): Edge[] {
  const edges: Edge[] = [];
  for (const file of sourceFiles(SRC)) {
    const info = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
    for (const { fileName: spec } of info.importedFiles) {
      if (!spec.startsWith(".")) continue;
      const target = resolve(dirname(file), spec);
      const from = folderOf(file);
      const to = target.startsWith(SRC + sep) ? folderOf(target) : "(outside src)";
      if (from !== to) edges.push({ file: relative(ROOT, file), spec, from, to });
    }
  }
  return edges;
}

/** Folder cycles (strongly connected components of more than one folder), by Tarjan's algorithm. */
function cycles(edges: readonly Edge[]): string[][] {
  const adj = new Map<string, Set<string>>();
  for (const e of edges) {
    if (!adj.has(e.from)) adj.set(e.from, new Set());
    adj.get(e.from)?.add(e.to);
  }
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v) ?? 0);
    stack.push(v);
    for (const w of adj.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) ?? 0, low.get(w) ?? 0));
      } else if (stack.includes(w)) low.set(v, Math.min(low.get(v) ?? 0, index.get(w) ?? 0));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string | undefined;
      do {
        w = stack.pop();
        if (w !== undefined) scc.push(w);
      } while (w !== undefined && w !== v);
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const v of adj.keys()) if (!index.has(v)) visit(v);
  return out;
}

/** Imports that leave src/ or point to a folder of the same or a higher layer. */
function upward(edges: readonly Edge[], layers: ReadonlyMap<string, number>): string[] {
  return edges
    .filter((e) => !((layers.get(e.to) ?? Number.POSITIVE_INFINITY) < (layers.get(e.from) ?? -1)))
    .map((e) => `${e.file}: "${e.spec}" (${e.from} → ${e.to})`);
}

const layers = readLayers(readFileSync(join(ROOT, "docs", "architecture.md"), "utf8"));
const edges = folderEdges();

test("every folder of src/ is placed in a layer of docs/architecture.md, and every listed folder exists", () => {
  const folders = new Set(sourceFiles(SRC).map(folderOf));
  const unplaced = [...folders].filter((f) => !layers.has(f) && !f.includes("."));
  assert.deepEqual(
    unplaced,
    [],
    `folders missing from docs/architecture.md's layers block: ${unplaced.join(", ")}`,
  );
  const gone = [...layers.keys()].filter((f) => !folders.has(f));
  assert.deepEqual(gone, [], `layers block names folders src/ does not have: ${gone.join(", ")}`);
});

test("no folder cycle", () => {
  assert.deepEqual(cycles(edges), [], "folders that import each other (directly or through others)");
});

test("imports point down the layers only", () => {
  const bad = upward(edges, layers);
  assert.deepEqual(bad, [], `imports across or up the layers:\n${bad.join("\n")}`);
});

test("the checker sees violations: a cycle and an upward import are caught", () => {
  const fake: Edge[] = [
    { file: "a.ts", spec: "../b/x.ts", from: "core", to: "zoo" },
    { file: "b.ts", spec: "../a/y.ts", from: "zoo", to: "core" },
  ];
  assert.deepEqual(cycles(fake), [["core", "zoo"]]);
  assert.deepEqual(upward(fake, layers), ['a.ts: "../b/x.ts" (core → zoo)']);
  assert.deepEqual(
    upward([{ file: "c.ts", spec: "../../x.ts", from: "core", to: "(outside src)" }], layers).length,
    1,
  );
  const siblings = [{ file: "d.ts", spec: "../data/w.ts", from: "core", to: "data" }];
  assert.equal(upward(siblings, layers).length, 1, "folders of one layer may not import each other");
  assert.throws(() => readLayers("```layers\ncore: a\ncore: b\n```"), /listed twice/);
});

test("docs/architecture.md names only what the code defines", () => {
  const doc = readFileSync(join(ROOT, "docs", "architecture.md"), "utf8");
  const code = sourceFiles(SRC)
    .map((f) => readFileSync(f, "utf8"))
    .join("\n");
  // Backticked identifiers, and the mixed-case names (camelCase, PascalCase) of the indented pictures.
  const names = new Set<string>();
  for (const m of doc.matchAll(/`([A-Za-z_][A-Za-z0-9_]*)(?:\(\))?`/g)) names.add(m[1] ?? "");
  for (const line of doc.split("\n").filter((l) => l.startsWith("    ")))
    for (const m of line.matchAll(/\b(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])([A-Za-z][A-Za-z0-9]*)\b/g))
      names.add(m[1] ?? "");
  const defined = (n: string) =>
    new RegExp(
      `(function\\*?|const|let|class|interface|type|enum)\\s+${n}\\b|\\b${n}\\s*[:(]|\\b${n}\\??:`,
    ).test(code);
  const missing = [...names].filter((n) => n && /[A-Z_]|^[a-z]+$/.test(n) && !defined(n));
  assert.deepEqual(
    missing,
    [],
    `names in docs/architecture.md that src/ does not define: ${missing.join(", ")}`,
  );
});
