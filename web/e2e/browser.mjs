// browser.mjs drives ferry's page in Debian's Chromium with playwright-core,
// for integration/browser_test.go, which starts the servers, makes the
// files, and checks what ends up stored and downloaded.
//
//   node e2e/browser.mjs CONFIG.json
//
// CONFIG (written by the Go test):
//   chromium      path of the browser (/usr/bin/chromium)
//   pageUrl       ferry's own page (same origin as the API)
//   proxyUrl      the same server through the test's counting proxy, whose
//                 PutChunk gate holds chunks >= gateFrom until gateUrl is fetched
//   gateUrl, gateFrom
//   heldUrl       answers how many chunks the proxy holds now
//   crossUrl      the page served from another origin, ?server=ferry
//   noCorsUrl     the page from that origin pointed at a ferry without --cors-origin
//   compareBodies also upload the big file with Uint8Array fetch bodies
//                 (?body=bytes), the baseline of the Blob bodies' rate
//   files         {small, mid, big, resume, cross}: paths to upload
//   downloadDir   where downloads are saved, under their key
//   screenshot, phoneScreenshot  PNG paths
//
// It prints progress lines and, last, one line "RESULT {json}" with the
// figures measured. Any failed expectation throws: exit status 1.
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { chromium } from "playwright-core";

const cfg = JSON.parse(await readFile(process.argv[2], "utf8"));
const MiB = 1 << 20;
const result = {};
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);

// A fresh profile, so no state (localStorage, cache) leaks between runs.
const profile = await mkdtemp(join(tmpdir(), "ferry-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: cfg.chromium,
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
  const page = await context.newPage();
  watch(page, "page");

  // 1. Upload three files on ferry's own page. The file chooser is the
  // first stop of the keyboard.
  await open(page, cfg.pageUrl);
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement?.id);
  if (focused !== "files") throw new Error(`the first Tab focuses #${focused}, want the file chooser #files`);
  const three = [cfg.files.small, cfg.files.mid, cfg.files.big];
  let start = Date.now();
  await page.setInputFiles("#files", three);
  for (const f of three) await waitUploaded(page, basename(f));
  log(`uploaded 3 files in ${Date.now() - start} ms`);
  const bigName = basename(cfg.files.big);
  const bigLi = page.locator(`#uploads li[data-name="${bigName}"]`);
  const upMs = Number(await bigLi.getAttribute("data-elapsed-ms"));
  result.bigBytes = await fileSize(page, bigName);
  result.uploadMs = upMs;
  result.uploadMiBs = result.bigBytes / MiB / (upMs / 1000);
  result.uploadState = await bigLi.locator(".state").textContent();
  log(`${bigName}: ${result.uploadState}`);

  // 2. Download them from the object list.
  for (const f of three) {
    const key = basename(f);
    const ms = await download(page, key);
    if (key === bigName) {
      result.downloadMs = ms;
      result.downloadMiBs = result.bigBytes / MiB / (ms / 1000);
      result.downloadState = await page.locator(`#objects tr[data-key="${key}"] .actions .muted`).textContent();
      log(`${key}: ${result.downloadState}`);
    }
  }
  await page.screenshot({ path: cfg.screenshot, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.locator("#settings summary").click();
  await page.screenshot({ path: cfg.phoneScreenshot, fullPage: true });
  // The page must fit a phone's width: nothing scrolls sideways.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  if (overflow > 0) throw new Error(`at 390 px wide the page scrolls sideways by ${overflow} px`);
  await page.close();

  // 3. Reload in the middle of an upload, through the counting proxy: the
  // proxy holds chunks >= gateFrom, so exactly gateFrom chunks are
  // committed when the page reloads; choosing the file again must send the
  // rest only.
  const resumeName = basename(cfg.files.resume);
  const rp = await context.newPage();
  watch(rp, "resume");
  await open(rp, cfg.proxyUrl);
  await rp.setInputFiles("#files", cfg.files.resume);
  const rli = rp.locator(`#uploads li[data-name="${resumeName}"]`);
  await rp.waitForFunction(
    ([sel, n]) => Number(document.querySelector(sel)?.getAttribute("data-committed") ?? 0) >= n,
    [`#uploads li[data-name="${resumeName}"]`, cfg.gateFrom],
  );
  // Wait until a held chunk has wholly reached the proxy, so the reload
  // cuts off a chunk in flight.
  for (let held = 0; held === 0; ) {
    held = Number(await (await fetch(cfg.heldUrl)).text());
    if (held === 0) await new Promise((r) => setTimeout(r, 50));
  }
  const chunks = Number(await rli.getAttribute("data-chunks"));
  log(`${resumeName}: ${cfg.gateFrom} of ${chunks} chunks committed; reloading`);
  await rp.reload();
  await rp.waitForSelector("html[data-ready]");
  await rp.waitForSelector(`#unfinished li[data-name="${resumeName}"]`);
  const gate = await fetch(cfg.gateUrl);
  if (!gate.ok) throw new Error(`opening the proxy's gate: ${gate.status}`);
  // Paused (with the keyboard) before the file is chosen again: the page
  // checks the server's state but sends no chunk until Resume.
  const pause = rp.locator("#pause");
  await pause.press("Enter");
  if ((await pause.getAttribute("aria-pressed")) !== "true") throw new Error("Enter on Pause did not pause");
  await rp.setInputFiles("#files", cfg.files.resume);
  await rli.locator(".state", { hasText: /^paused$/ }).waitFor();
  await rp.waitForTimeout(500);
  if ((await rli.getAttribute("data-sent")) !== null) throw new Error("a chunk was sent while paused");
  await pause.press("Enter");
  await waitUploaded(rp, resumeName);
  const sent = Number(await rli.getAttribute("data-sent"));
  result.resumeState = await rli.locator(".state").textContent();
  log(`${resumeName}: ${result.resumeState}`);
  if (sent !== chunks - cfg.gateFrom) {
    throw new Error(`after the reload the page sent ${sent} chunks, want ${chunks - cfg.gateFrom}`);
  }
  await rp.close();

  // 4. The page on another origin, through --cors-origin: list, upload,
  // download, delete.
  const cp = await context.newPage();
  watch(cp, "cross");
  await open(cp, cfg.crossUrl);
  await cp.waitForSelector(`#objects tr[data-key="${bigName}"]`);
  const crossName = basename(cfg.files.cross);
  await cp.setInputFiles("#files", cfg.files.cross);
  await waitUploaded(cp, crossName);
  await download(cp, crossName);
  cp.once("dialog", (d) => d.accept());
  await cp.locator(`#objects tr[data-key="${crossName}"] button`, { hasText: "Delete" }).click();
  await cp.waitForSelector(`#objects tr[data-key="${crossName}"]`, { state: "detached" });
  log(`cross-origin page listed, uploaded, downloaded and deleted ${crossName}`);
  await cp.close();

  // 5. The same page against a server that allows no other origin: the
  // browser must refuse, so step 4 passed because of --cors-origin.
  const np = await context.newPage();
  await open(np, cfg.noCorsUrl);
  await np.waitForFunction(() => document.getElementById("objects-text")?.textContent?.startsWith("Could not list"));
  log(`without --cors-origin: ${await np.locator("#objects-text").textContent()}`);
  await np.close();

  // 6. The baseline: the same 64 MiB with the request bodies connect-web
  // makes (Uint8Array) handed to fetch as they are.
  if (cfg.compareBodies) {
    const bp = await context.newPage();
    watch(bp, "bytes");
    await open(bp, `${cfg.pageUrl}?body=bytes`);
    await bp.setInputFiles("#files", cfg.files.big);
    await waitUploaded(bp, bigName);
    const ms = Number(await bp.locator(`#uploads li[data-name="${bigName}"]`).getAttribute("data-elapsed-ms"));
    result.bytesBodyUploadMs = ms;
    result.bytesBodyUploadMiBs = result.bigBytes / MiB / (ms / 1000);
    log(`${bigName} with Uint8Array bodies: ${result.bytesBodyUploadMiBs.toFixed(1)} MiB/s; Blob bodies ${(result.uploadMiBs / result.bytesBodyUploadMiBs).toFixed(2)}x faster`);
    await bp.close();
  }

  result.totalMs = Date.now() - t0;
  console.log(`RESULT ${JSON.stringify(result)}`);
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}

// watch prints the page's console errors and uncaught exceptions.
function watch(p, name) {
  p.on("pageerror", (e) => log(`${name}: page error: ${e.message}`));
  p.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") log(`${name}: console ${m.type()}: ${m.text()}`);
  });
}

async function open(p, url) {
  await p.goto(url);
  await p.waitForSelector("html[data-ready]");
}

// waitUploaded waits until the upload of name is done, failing on an error.
async function waitUploaded(p, name) {
  const sel = `#uploads li[data-name="${name}"]`;
  await p.waitForSelector(`${sel}[data-status="done"], ${sel}[data-status="error"]`);
  const li = p.locator(sel).last();
  if ((await li.getAttribute("data-status")) !== "done") {
    throw new Error(`upload of ${name} failed: ${await li.textContent()}`);
  }
}

// download clicks Download for key, saves the file into downloadDir and
// returns the page's own measure of the transfer in ms.
async function download(p, key) {
  const row = p.locator(`#objects tr[data-key="${key}"]`);
  await row.waitFor();
  const [dl] = await Promise.all([p.waitForEvent("download"), row.locator("button", { hasText: "Download" }).click()]);
  await dl.saveAs(join(cfg.downloadDir, key));
  if ((await row.getAttribute("data-download")) !== "done") throw new Error(`download of ${key}: ${await row.textContent()}`);
  return Number(await row.getAttribute("data-elapsed-ms"));
}

async function fileSize(p, name) {
  const f = Object.values(cfg.files).find((x) => basename(x) === name);
  const { size } = await import("node:fs").then((fs) => fs.promises.stat(f));
  return size;
}
