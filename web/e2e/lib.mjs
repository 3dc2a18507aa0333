// lib.mjs holds what the e2e scripts share: a fresh Chromium, logging,
// opening the page, and waiting for a condition with a deadline.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const t0 = Date.now();

/** log prints a line with the seconds since the script started. */
export const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);

/**
 * withBrowser runs fn(context) in a fresh headless Chromium at path: a new
 * profile, so no state (localStorage, cache) leaks between runs, removed
 * afterwards.
 */
export async function withBrowser(path, fn) {
  const profile = await mkdtemp(join(tmpdir(), "ferry-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: path,
    headless: true,
    acceptDownloads: true,
    viewport: { width: 1100, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.setDefaultTimeout(120_000);
  try {
    return await fn(context);
  } finally {
    await context.close();
    await rm(profile, { recursive: true, force: true });
  }
}

/** watch prints the page's console errors and warnings and uncaught exceptions. */
export function watch(p, name) {
  p.on("pageerror", (e) => log(`${name}: page error: ${e.message}`));
  p.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") log(`${name}: console ${m.type()}: ${m.text()}`);
  });
}

/** open loads url in p and waits until the page is wired. */
export async function open(p, url) {
  await p.goto(url);
  await p.waitForSelector("html[data-ready]");
}

/**
 * until polls fn (async, truthy when done) every 50 ms until it holds, and
 * throws after ms milliseconds, naming what was awaited.
 */
export async function until(what, fn, ms = 60_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`gave up after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
