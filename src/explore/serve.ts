// `guidance-lab serve <folder>`: a static server on localhost for an explorer folder or a run folder (its report page
// with explorer/ beside it). The page works from file:// on one thread; served with the two cross-origin isolation
// headers (COOP same-origin, COEP require-corp) it gets SharedArrayBuffer, so onnxruntime-web runs its wasm
// forwards on every core. Only files under the folder are served, read-only; nothing else is reachable.
import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join, relative, resolve, sep } from "node:path";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".css": "text/css",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".csv": "text/csv; charset=utf-8",
  ".wasm": "application/wasm",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/plain; charset=utf-8",
};

/** The headers that make a page cross-origin isolated (web.dev/cross-origin-isolation-guide). */
export const ISOLATION_HEADERS = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
} as const;

export interface Served {
  /** http://host:port/ of the folder's root. */
  url: string;
  server: Server;
  close(): Promise<void>;
}

/**
 * Serves `dir` on `host`:`port` (0 = any free port). Paths resolve inside `dir` only (links included); a folder
 * answers with its index.html.
 */
export async function serveFolder(dir: string, opts: { port?: number; host?: string } = {}): Promise<Served> {
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new Error(`serve: '${dir}' is not a folder (give an explorer folder or a run folder)`);
  const root = realpathSync(resolve(dir));
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`serve: --port: expected an integer in 0..65535, got ${port}`);
  const server = createServer((req, res) => {
    const send = (code: number, body: string | Buffer, type = "text/plain; charset=utf-8") => {
      res.writeHead(code, { "Content-Type": type, "Cache-Control": "no-cache", ...ISOLATION_HEADERS });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "GET or HEAD only\n");
    let path: string;
    try {
      path = decodeURIComponent(new URL(req.url ?? "/", "http://localhost").pathname);
    } catch {
      return send(400, "bad path\n");
    }
    let file = join(root, path);
    try {
      if (statSync(file).isDirectory()) file = join(file, "index.html");
      file = realpathSync(file);
    } catch {
      // Browsers ask for an icon the report pages do not have; an empty answer keeps the console clean.
      if (path === "/favicon.ico") return send(204, "");
      return send(404, `not found: ${path}\n`);
    }
    const rel = relative(root, file);
    if (rel.startsWith(`..${sep}`) || rel === ".." || resolve(root, rel) !== file)
      return send(403, "outside the served folder\n");
    try {
      send(200, readFileSync(file), TYPES[extname(file).toLowerCase()] ?? "application/octet-stream");
    } catch {
      send(404, `not found: ${path}\n`);
    }
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      fail(
        new Error(
          e.code === "EADDRINUSE"
            ? `serve: port ${port} on ${host} is in use (--port 0 picks a free one)`
            : e.message,
        ),
      ),
    );
    server.listen(port, host, () => ok());
  });
  const a = server.address() as AddressInfo;
  const shown = a.family === "IPv6" ? `[${a.address}]` : a.address;
  return {
    url: `http://${shown}:${a.port}/`,
    server,
    close: () => new Promise<void>((ok) => server.close(() => ok())),
  };
}
