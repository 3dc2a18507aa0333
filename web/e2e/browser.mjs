// browser.mjs drives ferry's page in Debian's Chromium with playwright-core,
// for integration/browser_test.go, which starts the servers, makes the
// files, and checks what ends up stored and downloaded.
//
//   node e2e/browser.mjs CONFIG.json
//
// CONFIG (written by the Go test):
//   chromium      path of the browser (/usr/bin/chromium)
//   pageUrl       ferry's own page (same origin as the API)
//   proxyUrl      the same server through the test's counting proxy, which
//                 never forwards the PutChunk calls of chunks >= holdFrom
//                 made by the page loaded as ?run=1 (it holds them until
//                 their connection closes), and forwards those of ?run=2
//   holdFrom
//   heldUrl       answers how many chunks the proxy holds now
//   crossUrl      the page served from another origin, ?server=ferry (the
//                 page asks before it uses it)
//   noCorsUrl     the page from that origin pointed at a ferry without --cors-origin
//   compareBodies also upload the big file with Uint8Array fetch bodies
//                 (?body=bytes), the baseline of the Blob bodies' rate
//   files         {small, mid, big, resume, cross}: paths to upload
//   downloadDir   where downloads are saved, under their key
//   screenshot, phoneScreenshot  PNG paths
//
// It prints progress lines and, last, one line "RESULT {json}" with the
// figures measured. Any failed expectation throws: exit status 1.
import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { log, open, until, watch, withBrowser } from "./lib.mjs";

const cfg = JSON.parse(await readFile(process.argv[2], "utf8"));
const MiB = 1 << 20;
const result = {};
const t0 = Date.now();

await withBrowser(cfg.chromium, async (context) => {
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
  // proxy never forwards chunks >= holdFrom of this first load (?run=1),
  // so exactly holdFrom chunks are committed when the page is loaded again
  // (?run=2, the same page with a tag the proxy reads from the Referer);
  // choosing the file again must send the rest only.
  const resumeName = basename(cfg.files.resume);
  const rp = await context.newPage();
  watch(rp, "resume");
  await open(rp, `${cfg.proxyUrl}?run=1`);
  await rp.setInputFiles("#files", cfg.files.resume);
  const rli = rp.locator(`#uploads li[data-name="${resumeName}"]`);
  await rp.waitForFunction(
    ([sel, n]) => Number(document.querySelector(sel)?.getAttribute("data-committed") ?? 0) >= n,
    [`#uploads li[data-name="${resumeName}"]`, cfg.holdFrom],
  );
  // Wait until a held chunk has wholly reached the proxy, so the reload
  // cuts off a chunk in flight.
  await until("the proxy holds a chunk", async () => Number(await (await fetch(cfg.heldUrl)).text()) > 0);
  const chunks = Number(await rli.getAttribute("data-chunks"));
  log(`${resumeName}: ${cfg.holdFrom} of ${chunks} chunks committed; reloading`);
  await open(rp, `${cfg.proxyUrl}?run=2`);
  await rp.waitForSelector(`#unfinished li[data-name="${resumeName}"]`);
  // The reload closed the held chunks' connections (the proxy counts them
  // as cut off).
  await until("the proxy holds no chunk", async () => Number(await (await fetch(cfg.heldUrl)).text()) === 0);
  // Paused (with the keyboard) before the file is chosen again: the page
  // checks the server's state and stops before its first chunk.
  const pause = rp.locator("#pause");
  await pause.press("Enter");
  if ((await pause.getAttribute("aria-pressed")) !== "true") throw new Error("Enter on Pause did not pause");
  await rp.setInputFiles("#files", cfg.files.resume);
  await rli.locator(".state", { hasText: /^paused$/ }).waitFor();
  if ((await rli.getAttribute("data-sent")) !== null) throw new Error("a chunk was sent while paused");
  await pause.press("Enter");
  await waitUploaded(rp, resumeName);
  const sent = Number(await rli.getAttribute("data-sent"));
  result.resumeState = await rli.locator(".state").textContent();
  log(`${resumeName}: ${result.resumeState}`);
  if (sent !== chunks - cfg.holdFrom) {
    throw new Error(`after the reload the page sent ${sent} chunks, want ${chunks - cfg.holdFrom}`);
  }
  await rp.close();

  // 4. The page on another origin, through --cors-origin: list, upload,
  // download, delete.
  const cp = await context.newPage();
  watch(cp, "cross");
  await open(cp, cfg.crossUrl);
  await confirmServer(cp);
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
  await confirmServer(np);
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
});

// confirmServer accepts the page's question whether to use the server its
// link names.
async function confirmServer(p) {
  await p.locator("#server-prompt[open] #server-use").click();
  await p.waitForSelector('#server-status[data-state="ok"]');
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
