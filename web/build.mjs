// build.mjs bundles the page into an output folder (default dist/):
// app.js and crc-worker.js from src/ with esbuild, plus the static files.
// The output is deterministic, so scripts/web.sh --check can compare it
// with the committed dist/.
//
//   node build.mjs [OUTDIR]
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "dist"));

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  absWorkingDir: here,
  entryPoints: { app: "src/main.ts", "crc-worker": "src/crc-worker.ts" },
  outdir: out,
  bundle: true,
  format: "esm",
  target: ["chrome111", "firefox111", "safari16.4"],
  minify: true,
  legalComments: "none",
  logLevel: "warning",
});
for (const f of ["index.html", "style.css"]) {
  await copyFile(join(here, "src", f), join(out, f));
}
