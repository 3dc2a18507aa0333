// ferry's browser page: choose or drop files and upload them with the unary
// chunk RPCs over gRPC-Web; list, download and delete stored objects.
//
// Query parameters: ?server=URL proposes another ferry server instead of
// the page's own origin; the page asks the person before it contacts it
// (servers.ts), and reaches it only if the page's Content-Security-Policy
// allows it (ferry serve --page-server) and it allows the page's origin
// (its --cors-origin); ?body=bytes hands fetch request bodies as the
// Uint8Array connect-web makes instead of a Blob, to measure what the Blob
// gains (see client.ts).
//
// The browser tests (web/e2e/*.mjs) read the page's state from data
// attributes, which are therefore kept stable: <html data-ready> once the
// page is wired; #server-status data-state (ok; pending: a link's server
// awaits confirmation in #server-prompt; blocked: the policy forbids it;
// invalid; none) and data-origin; on each upload's <li data-name>:
// data-status (queued, running, done, error), data-committed and
// data-chunks (chunks on the server, of all), data-sent (PutChunk calls
// made by this page load), data-elapsed-ms and data-crc32c when done; on
// each object's <tr data-key>: data-download (running, done, error) and
// data-elapsed-ms.

import { createClients, type Clients } from "./client";
import { CrcWorker } from "./crc-protocol";
import { PageError, describeError } from "./errors";
import { downloadObject, saveBlob } from "./download";
import { allSaved, forget, resumeKey } from "./resume";
import {
  confirmServer,
  forgetUnboundToken,
  ownTarget,
  pageServers,
  parseServer,
  reachable,
  sameTarget,
  setToken,
  tokenFor,
  unreachableText,
  wasConfirmed,
  type Target,
} from "./servers";
import { Gate, MiB, hex, uploadFile, type UploadSettings } from "./upload";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

const serverInput = $<HTMLInputElement>("server");
const tokenInput = $<HTMLInputElement>("token");
const concurrencyInput = $<HTMLInputElement>("concurrency");
const chunkSizeInput = $<HTMLInputElement>("chunk-size");
const filesInput = $<HTMLInputElement>("files");
const drop = $<HTMLDivElement>("drop");
const pauseButton = $<HTMLButtonElement>("pause");
const overall = $<HTMLProgressElement>("overall");
const overallText = $<HTMLSpanElement>("overall-text");
const uploadsList = $<HTMLUListElement>("uploads");
const unfinishedBox = $<HTMLDivElement>("unfinished-box");
const unfinishedList = $<HTMLUListElement>("unfinished");
const objectsBody = ($<HTMLTableElement>("objects")).tBodies[0];
const objectsText = $<HTMLSpanElement>("objects-text");
const refreshButton = $<HTMLButtonElement>("refresh");
const errorBox = $<HTMLDivElement>("error");
const announcer = $<HTMLDivElement>("announce");
const serverStatus = $<HTMLParagraphElement>("server-status");
const pageServersList = $<HTMLDataListElement>("page-servers");
const prompt = $<HTMLDialogElement>("server-prompt");
const promptOrigin = $<HTMLElement>("server-prompt-origin");
const promptCsp = $<HTMLParagraphElement>("server-prompt-csp");
const ownOrigin = $<HTMLSpanElement>("own-origin");
const useButton = $<HTMLButtonElement>("server-use");
const stayButton = $<HTMLButtonElement>("server-stay");

// Settings: the server chosen by hand in localStorage, each server's token
// in sessionStorage only (it is a credential, bound to the server's
// origin: see servers.ts), the rest in localStorage. A server named by
// ?server= is used only once the person confirms it in the page.
const params = new URLSearchParams(location.search);
const blobBodies = params.get("body") !== "bytes";
forgetUnboundToken();
concurrencyInput.value = localStorage.getItem("ferry.concurrency") ?? "4";
chunkSizeInput.value = localStorage.getItem("ferry.chunkMiB") ?? "8";
for (const origin of pageServers()) {
  const o = document.createElement("option");
  o.value = origin;
  pageServersList.append(o);
}

function clampInt(v: string, lo: number, hi: number, dflt: number): number {
  const n = Math.round(Number(v));
  return Number.isFinite(n) && n >= lo && n <= hi ? n : dflt;
}

/** The server the page talks to, or undefined while none is usable. */
let target: Target | undefined;
/** Clients of target with its token; undefined while target is unset or unreachable. */
let clients: Clients | undefined;
/** Why there are no clients, for a person. */
let noClients = "";

function settings(): UploadSettings {
  return {
    server: target?.server ?? "",
    // Browsers open at most 6 HTTP/1.1 connections per origin.
    concurrency: clampInt(concurrencyInput.value, 1, 6, 4),
    chunkSize: clampInt(chunkSizeInput.value, 5, 64, 8) * MiB,
  };
}

/**
 * use makes t the server the page talks to (undefined: none, because of
 * why), with the token kept for its origin, and shows what it talks to.
 */
function use(t: Target | undefined, why = ""): void {
  target = t;
  clients = undefined;
  noClients = why;
  serverStatus.dataset.state = "none";
  if (t !== undefined) {
    serverInput.value = t.server;
    tokenInput.value = tokenFor(t.origin);
    if (!reachable(t)) {
      noClients = unreachableText(t);
      serverStatus.dataset.state = "blocked";
    } else {
      clients = createClients(t, tokenInput.value, blobBodies);
      serverStatus.dataset.state = "ok";
    }
  }
  serverStatus.dataset.origin = t?.origin ?? "";
  serverStatus.classList.toggle("error", clients === undefined);
  serverStatus.textContent =
    clients !== undefined
      ? t!.server === ""
        ? `Server: this page's own (${location.origin}).`
        : `Server: ${t!.server}, not this page's own.`
      : noClients;
  showUnfinished();
  void refreshObjects();
}

/** noClientsError is the error of an action attempted with no usable server. */
function noClientsError(): PageError {
  return new PageError(noClients || "No server is chosen: choose one under Settings.");
}

/**
 * chooseFromLink resolves ?server=: the page's own server and the server
 * chosen by hand are used at once; another is contacted only once the
 * person confirms it in the dialog (until then nothing is sent to it, and
 * the page's files cannot be chosen), and it starts with no token.
 */
function chooseFromLink(saved: Target, text: string): void {
  const t = parseServer(text);
  if (typeof t === "string") {
    use(saved);
    showError(`The link names a server this page cannot use: ${t} Staying with ${saved.server || "this page's own server"}.`);
    dropServerParam();
    return;
  }
  if (sameTarget(t, ownTarget()) || sameTarget(t, saved) || wasConfirmed(t.origin)) {
    use(t);
    return;
  }
  use(undefined, `Waiting for you to confirm the server ${t.origin} named by the link.`);
  serverStatus.dataset.state = "pending";
  serverStatus.dataset.origin = t.origin;
  serverStatus.classList.remove("error");
  promptOrigin.textContent = t.server;
  ownOrigin.textContent = location.origin;
  useButton.textContent = `Use ${t.origin}`;
  promptCsp.hidden = reachable(t);
  promptCsp.textContent = reachable(t) ? "" : unreachableText(t);
  const decide = (yes: boolean) => {
    prompt.close();
    if (yes) {
      confirmServer(t.origin);
      use(t);
      announce(`Now using the server ${t.origin}.`);
    } else {
      dropServerParam();
      use(saved);
      announce(`Staying with ${saved.server || "this page's own server"}.`);
    }
  };
  useButton.onclick = () => decide(true);
  stayButton.onclick = () => decide(false);
  // Escape (the dialog's cancel) is the safe answer: stay.
  prompt.oncancel = (e) => {
    e.preventDefault();
    decide(false);
  };
  prompt.showModal();
}

/** dropServerParam removes ?server= from the address, so a reload does not ask again. */
function dropServerParam(): void {
  const u = new URL(location.href);
  if (!u.searchParams.has("server")) return;
  u.searchParams.delete("server");
  history.replaceState(history.state, "", u);
}

$<HTMLFormElement>("settings-form").addEventListener("change", (e) => {
  if (e.target === serverInput) {
    // A server chosen by hand: remembered, and with its own token.
    const t = parseServer(serverInput.value);
    if (typeof t === "string") {
      use(undefined, t);
      serverStatus.dataset.state = "invalid";
      return;
    }
    localStorage.setItem("ferry.server", t.server);
    dropServerParam();
    use(t);
    return;
  }
  if (e.target === tokenInput) {
    if (target === undefined) return;
    setToken(target.origin, tokenInput.value);
    use(target);
    return;
  }
  const s = settings();
  localStorage.setItem("ferry.concurrency", String(s.concurrency));
  localStorage.setItem("ferry.chunkMiB", String(s.chunkSize / MiB));
});
$<HTMLFormElement>("settings-form").addEventListener("submit", (e) => e.preventDefault());

// The browser refuses fetches its Content-Security-Policy does not allow;
// say so rather than leave a bare network error.
document.addEventListener("securitypolicyviolation", (e) => {
  if (e.effectiveDirective !== "connect-src") return;
  let origin = e.blockedURI;
  try {
    origin = new URL(e.blockedURI).origin;
  } catch {
    // blockedURI may be a bare scheme; show it as it is.
  }
  showError(unreachableText({ server: origin, origin }));
});

const crc = new CrcWorker(new URL("crc-worker.js", import.meta.url));
const gate = new Gate();

function announce(text: string): void {
  announcer.textContent = text;
}

function showError(text: string): void {
  errorBox.textContent = text;
  errorBox.hidden = text === "";
}

/** formatBytes writes a byte count for a person: 3 B, 2.9 KiB, 64.0 MiB. */
function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < MiB) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${(n / 1024 / MiB).toFixed(2)} GiB`;
}

// ---- Uploads ----------------------------------------------------------

interface Item {
  file: File;
  li: HTMLLIElement;
  bar: HTMLProgressElement;
  bytes: HTMLSpanElement;
  state: HTMLSpanElement;
  done: number;
  /** Last quarter announced, so progress is spoken at 25 % steps only. */
  spoken: number;
}

const items: Item[] = [];
const queue: Item[] = [];
let running = false;

function addItem(file: File): Item {
  const li = document.createElement("li");
  li.dataset.name = file.name;
  li.dataset.status = "queued";
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = file.name;
  const bar = document.createElement("progress");
  bar.max = Math.max(1, file.size);
  bar.value = 0;
  bar.setAttribute("aria-label", `Upload of ${file.name}`);
  const line = document.createElement("div");
  line.className = "line";
  const bytes = document.createElement("span");
  bytes.textContent = `0 B of ${formatBytes(file.size)}`;
  const state = document.createElement("span");
  state.className = "state";
  state.textContent = "waiting";
  line.append(bytes, state);
  li.append(name, bar, line);
  uploadsList.append(li);
  const item: Item = { file, li, bar, bytes, state, done: 0, spoken: 0 };
  items.push(item);
  return item;
}

function updateOverall(): void {
  let total = 0;
  let done = 0;
  for (const it of items) {
    total += it.file.size;
    done += it.done;
  }
  overall.max = Math.max(1, total);
  overall.value = done;
  const finished = items.filter((it) => it.li.dataset.status === "done").length;
  overallText.textContent = `${formatBytes(done)} of ${formatBytes(total)} · ${finished} of ${items.length} files done`;
}

function enqueue(files: Iterable<File>): void {
  showError("");
  for (const f of files) queue.push(addItem(f));
  updateOverall();
  void runQueue();
}

async function runQueue(): Promise<void> {
  if (running) return;
  running = true;
  try {
    for (let it = queue.shift(); it; it = queue.shift()) await runItem(it);
  } finally {
    running = false;
  }
  showUnfinished();
  void refreshObjects();
}

async function runItem(it: Item): Promise<void> {
  const s = settings();
  const started = performance.now();
  let sent = 0;
  it.li.dataset.status = "running";
  announce(`Uploading ${it.file.name}.`);
  try {
    if (clients === undefined) throw noClientsError();
    const res = await uploadFile(clients, crc, gate, s, it.file, it.file.name, {
      status: (text) => {
        it.state.textContent = text;
      },
      progress: (done, total, chunksDone, chunks) => {
        it.done = done;
        it.bar.value = done;
        const secs = (performance.now() - started) / 1000;
        const rate = secs > 0 ? done / MiB / secs : 0;
        it.bytes.textContent = `${formatBytes(done)} of ${formatBytes(total)} · chunk ${chunksDone}/${chunks}` + (secs > 0.2 ? ` · ${rate.toFixed(1)} MiB/s` : "");
        it.li.dataset.committed = String(chunksDone);
        it.li.dataset.chunks = String(chunks);
        const quarter = total > 0 ? Math.floor((4 * done) / total) : 4;
        if (quarter > it.spoken && quarter < 4) {
          it.spoken = quarter;
          announce(`${it.file.name}: ${quarter * 25} % uploaded.`);
        }
        updateOverall();
      },
      sent: () => {
        sent++;
        it.li.dataset.sent = String(sent);
      },
    });
    const rate = res.size / MiB / (res.elapsedMs / 1000);
    it.li.dataset.status = "done";
    it.li.dataset.elapsedMs = res.elapsedMs.toFixed(0);
    it.li.dataset.crc32c = hex(res.crc32c);
    it.state.textContent =
      `done in ${(res.elapsedMs / 1000).toFixed(2)} s` +
      (res.size >= MiB ? ` (${rate.toFixed(1)} MiB/s)` : "") +
      `, CRC32C ${hex(res.crc32c)} verified by the server` +
      (res.resumed ? `; resumed: sent ${res.chunksSent} of ${res.chunks} chunks` : "");
    announce(`${it.file.name} uploaded and verified.`);
  } catch (err) {
    it.li.dataset.status = "error";
    const msg = describeError(err);
    it.state.textContent = `failed: ${msg}`;
    announce(`Upload of ${it.file.name} failed: ${msg}`);
    showError(`Upload of ${it.file.name} failed: ${msg}`);
  }
  updateOverall();
}

filesInput.addEventListener("change", () => {
  if (filesInput.files) enqueue(Array.from(filesInput.files));
  filesInput.value = "";
});
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  // A dropped folder arrives as a File of size 0 and no type, which cannot
  // be read; skip those (and, alas, empty files of unknown type with them).
  const files = Array.from(e.dataTransfer?.files ?? []).filter((f) => f.size > 0 || f.type !== "");
  if (files.length > 0) enqueue(files);
});
pauseButton.addEventListener("click", () => {
  if (gate.paused) {
    gate.resume();
    pauseButton.textContent = "Pause";
    pauseButton.setAttribute("aria-pressed", "false");
    announce("Uploads resumed.");
  } else {
    gate.pause();
    pauseButton.textContent = "Resume";
    pauseButton.setAttribute("aria-pressed", "true");
    announce("Uploads paused; chunks already on their way finish.");
  }
});

function showUnfinished(): void {
  const server = settings().server;
  const active = new Set(items.filter((it) => it.li.dataset.status !== "done").map((it) => resumeKey(it.file)));
  const saved = allSaved().filter((u) => u.server === server && !active.has(resumeKey(u)));
  unfinishedList.replaceChildren();
  for (const u of saved) {
    const li = document.createElement("li");
    li.dataset.name = u.name;
    const line = document.createElement("div");
    line.className = "line";
    const text = document.createElement("span");
    text.textContent = `${u.name} (${formatBytes(u.size)}): choose this file again to resume.`;
    const discard = document.createElement("button");
    discard.type = "button";
    discard.textContent = "Discard";
    discard.setAttribute("aria-label", `Discard the unfinished upload of ${u.name}`);
    discard.addEventListener("click", async () => {
      if (clients === undefined) {
        // Keep it: the upload can be aborted once its server is usable.
        showError(describeError(noClientsError()));
        return;
      }
      try {
        await clients.upload.abortUpload({ uploadId: u.uploadId });
      } catch {
        // Gone already (expired or completed): forgetting is all that is left.
      }
      forget(resumeKey(u));
      showUnfinished();
    });
    line.append(text, discard);
    li.append(line);
    unfinishedList.append(li);
  }
  unfinishedBox.hidden = saved.length === 0;
}

// ---- Objects ----------------------------------------------------------

async function refreshObjects(): Promise<void> {
  const c = clients;
  if (c === undefined) {
    objectsBody.replaceChildren();
    objectsText.textContent = noClients;
    return;
  }
  objectsText.textContent = "Loading…";
  try {
    const rows: HTMLTableRowElement[] = [];
    let pageToken = "";
    do {
      const res = await c.objects.listObjects({ pageToken });
      for (const o of res.objects) rows.push(objectRow(o.key, Number(o.size), o.lastModified ? new Date(Number(o.lastModified.seconds) * 1000) : undefined));
      pageToken = res.nextPageToken;
    } while (pageToken !== "" && rows.length < 10_000 && c === clients);
    // A listing of a server the page has left since is not shown: its rows'
    // buttons would act on the current one.
    if (c !== clients) return;
    objectsBody.replaceChildren(...rows);
    objectsText.textContent = rows.length === 1 ? "1 object." : `${rows.length} objects.`;
  } catch (err) {
    if (c !== clients) return;
    objectsText.textContent = `Could not list objects: ${describeError(err)}`;
  }
}

function objectRow(key: string, size: number, modified: Date | undefined): HTMLTableRowElement {
  const tr = document.createElement("tr");
  tr.dataset.key = key;
  const k = document.createElement("td");
  k.className = "key";
  k.textContent = key;
  const sz = document.createElement("td");
  sz.textContent = formatBytes(size);
  const mod = document.createElement("td");
  mod.textContent = modified ? modified.toLocaleString() : "";
  const actions = document.createElement("td");
  actions.className = "actions";
  const status = document.createElement("div");
  status.className = "muted";
  status.setAttribute("aria-live", "polite");
  const dl = document.createElement("button");
  dl.type = "button";
  dl.textContent = "Download";
  dl.setAttribute("aria-label", `Download ${key}`);
  dl.addEventListener("click", async () => {
    dl.disabled = true;
    tr.dataset.download = "running";
    try {
      if (clients === undefined) throw noClientsError();
      const res = await downloadObject(clients, key, (got, total) => {
        status.textContent = `${formatBytes(got)} of ${formatBytes(total)}`;
      });
      const rate = size / MiB / (res.elapsedMs / 1000);
      tr.dataset.download = "done";
      tr.dataset.elapsedMs = res.elapsedMs.toFixed(0);
      status.textContent =
        `received in ${(res.elapsedMs / 1000).toFixed(2)} s` +
        (size >= MiB ? ` (${rate.toFixed(1)} MiB/s)` : "") +
        (res.verified ? ", CRC32C verified" : "");
      saveBlob(res.blob, key.split("/").pop() || "download");
    } catch (err) {
      tr.dataset.download = "error";
      status.textContent = `Download failed: ${describeError(err)}`;
      showError(`Download of ${key} failed: ${describeError(err)}`);
    } finally {
      dl.disabled = false;
    }
  });
  const del = document.createElement("button");
  del.type = "button";
  del.textContent = "Delete";
  del.setAttribute("aria-label", `Delete ${key}`);
  del.addEventListener("click", async () => {
    if (!confirm(`Delete ${key}? This cannot be undone.`)) return;
    try {
      if (clients === undefined) throw noClientsError();
      await clients.objects.deleteObject({ key });
      announce(`${key} deleted.`);
      await refreshObjects();
    } catch (err) {
      showError(`Could not delete ${key}: ${describeError(err)}`);
    }
  });
  actions.append(dl, del, status);
  tr.append(k, sz, mod, actions);
  return tr;
}

refreshButton.addEventListener("click", () => void refreshObjects());
{
  const saved = parseServer(localStorage.getItem("ferry.server") ?? "");
  const savedTarget = typeof saved === "string" ? ownTarget() : saved;
  const fromLink = params.get("server");
  if (fromLink !== null) chooseFromLink(savedTarget, fromLink);
  else use(savedTarget);
}
document.documentElement.dataset.ready = "true";
