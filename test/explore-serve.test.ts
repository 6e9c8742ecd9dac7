// `guidance-lab serve`'s static server (no browser): the isolation headers on every answer, index.html for a
// folder, nothing outside the folder, and clear errors for a missing folder or a bad port.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ISOLATION_HEADERS, type Served, serveFolder } from "../src/explore/serve.ts";

describe("serve", () => {
  let root: string;
  let served: Served;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), "gl-serve-test-"));
    mkdirSync(join(root, "site", "explorer"), { recursive: true });
    writeFileSync(join(root, "site", "index.html"), "<p>report</p>");
    writeFileSync(join(root, "site", "explorer", "index.html"), "<p>explorer</p>");
    writeFileSync(join(root, "site", "explorer", "glue.mjs"), "export default 1;");
    writeFileSync(join(root, "secret.txt"), "outside");
    symlinkSync(join(root, "secret.txt"), join(root, "site", "link.txt"));
    served = await serveFolder(join(root, "site"));
  });

  after(async () => {
    await served?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it("answers with the cross-origin isolation headers and the right types", async () => {
    const r = await fetch(`${served.url}explorer/`);
    assert.equal(r.status, 200);
    assert.equal(await r.text(), "<p>explorer</p>", "a folder answers with its index.html");
    for (const [k, v] of Object.entries(ISOLATION_HEADERS)) assert.equal(r.headers.get(k), v, k);
    assert.match(r.headers.get("content-type") ?? "", /text\/html/);
    const m = await fetch(`${served.url}explorer/glue.mjs`);
    assert.match(m.headers.get("content-type") ?? "", /text\/javascript/, "modules load only with a JS type");
    assert.equal((await fetch(`${served.url}favicon.ico`)).status, 204);
  });

  it("serves nothing outside the folder", async () => {
    assert.equal((await fetch(`${served.url}../secret.txt`)).status, 404, "the URL parser drops ..");
    assert.equal((await fetch(`${served.url}%2e%2e/secret.txt`)).status, 404);
    assert.equal((await fetch(`${served.url}..%2fsecret.txt`)).status, 403, "an encoded slash stays outside");
    assert.equal((await fetch(`${served.url}link.txt`)).status, 403, "a link leading out is refused");
    assert.equal((await fetch(`${served.url}nope.js`)).status, 404);
    assert.equal((await fetch(`${served.url}index.html`, { method: "POST" })).status, 405);
  });

  it("names the folder or the port when they are wrong", async () => {
    await assert.rejects(serveFolder(join(root, "missing")), /serve: '.*missing' is not a folder/);
    await assert.rejects(serveFolder(join(root, "site"), { port: 70000 }), /--port: expected an integer/);
    const port = Number(new URL(served.url).port);
    await assert.rejects(serveFolder(join(root, "site"), { port }), new RegExp(`port ${port} .* is in use`));
  });
});
