// Uploading one file with the unary chunk RPCs (browsers cannot stream
// request bodies): CreateUpload or GetUpload, PutChunk for each missing
// chunk with several in flight, then CompleteUpload with the whole-file
// CRC32C.

import { Code, ConnectError } from "@connectrpc/connect";
import type { Clients } from "./client";
import type { CrcWorker } from "./crc-protocol";
import { describeError, isRetryable } from "./errors";
import { forget, loadSaved, resumeKey, save } from "./resume";

/** S3 allows at most this many parts, so an upload at most this many chunks. */
const maxChunks = 10_000;
/** One MiB, 1,048,576 bytes. */
export const MiB = 1 << 20;

/** Settings that shape an upload. */
export interface UploadSettings {
  /** The server ("" for this page's origin). */
  server: string;
  /** Chunk size in bytes for new uploads (the server's rules: >= 5 MiB). */
  chunkSize: number;
  /** PutChunk calls in flight at once. */
  concurrency: number;
}

/** Gate pauses new chunk sends of every upload while closed. */
export class Gate {
  private waiters: (() => void)[] = [];
  paused = false;

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** wait returns once the gate is open. */
  wait(): Promise<void> {
    if (!this.paused) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

/** What an upload reports as it goes. */
export interface UploadEvents {
  /** status is a short line for a person: "creating", "resuming", "sending"… */
  status(text: string): void;
  /** progress reports bytes committed (including those committed before). */
  progress(done: number, total: number, chunksDone: number, chunks: number): void;
  /** sent is called for each PutChunk call made, with the chunk index. */
  sent(index: number): void;
}

/** The outcome of a completed upload. */
export interface UploadResult {
  key: string;
  size: number;
  /** CRC32C computed by the page over the file's bytes. */
  crc32c: number;
  /** CRC32C of the stored object as the server reports it. */
  serverCrc32c: number | undefined;
  /** Chunks sent by this run; fewer than chunks when it resumed. */
  chunksSent: number;
  chunks: number;
  resumed: boolean;
  /** Milliseconds from the first call to completion. */
  elapsedMs: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * chunkSizeFor returns the chunk size to create an upload of size bytes
 * with: the preferred size, raised to whole MiB so that the object fits in
 * 10,000 chunks (the S3 limit).
 */
export function chunkSizeFor(size: number, preferred: number): number {
  const least = Math.ceil(size / maxChunks / MiB) * MiB;
  return Math.max(preferred, least);
}

/**
 * uploadFile uploads file under key, resuming an unfinished upload of the
 * same file (by name, size and last-modified time) when the server still
 * has it. Transient failures (UNAVAILABLE, network errors, deadlines) are
 * retried with backoff; other errors are thrown as ConnectError.
 */
export async function uploadFile(
  clients: Clients,
  crc: CrcWorker,
  gate: Gate,
  settings: UploadSettings,
  file: File,
  key: string,
  ev: UploadEvents,
): Promise<UploadResult> {
  const started = performance.now();
  const rk = resumeKey(file);
  const size = file.size;
  let uploadId = "";
  let chunkSize = 0;
  let chunks = 0;
  const committed = new Map<number, number>(); // index → CRC32C
  let resumed = false;

  const saved = loadSaved(rk);
  if (saved && saved.server === settings.server && saved.key === key) {
    ev.status("checking what the server already has");
    try {
      let pageToken = "";
      do {
        const res = await retrying(() => clients.upload.getUpload({ uploadId: saved.uploadId, pageSize: maxChunks, pageToken }), ev);
        for (const c of res.chunks) committed.set(Number(c.index), c.crc32c >>> 0);
        chunkSize = Number(res.upload?.spec?.chunkSize ?? 0);
        chunks = Number(res.upload?.chunkCount ?? 0);
        pageToken = res.nextPageToken;
      } while (pageToken !== "");
      uploadId = saved.uploadId;
      resumed = true;
    } catch (err) {
      if (ConnectError.from(err).code !== Code.NotFound) throw err;
      // Expired or completed elsewhere: start over.
      forget(rk);
      committed.clear();
    }
  }
  if (uploadId === "") {
    ev.status("creating the upload");
    const res = await retrying(
      () =>
        clients.upload.createUpload({
          spec: {
            key,
            size: BigInt(size),
            contentType: file.type,
            chunkSize: BigInt(chunkSizeFor(size, settings.chunkSize)),
          },
        }),
      ev,
    );
    uploadId = res.upload?.uploadId ?? "";
    chunkSize = Number(res.upload?.spec?.chunkSize ?? 0);
    chunks = Number(res.upload?.chunkCount ?? 0);
    save({ uploadId, server: settings.server, key, name: file.name, size, lastModified: file.lastModified, chunkSize });
  }
  if (uploadId === "" || chunkSize <= 0 || chunks <= 0) {
    throw new ConnectError("the server described the upload incompletely", Code.Internal);
  }

  let done = 0;
  let chunksDone = 0;
  let chunksSent = 0;
  const report = () => ev.progress(done, size, chunksDone, chunks);
  report();
  ev.status(resumed ? `resuming: ${committed.size} of ${chunks} chunks already on the server` : "sending");

  const session = `${uploadId}/${Math.random()}`;
  await crc.start(session);
  const inflight = new Set<Promise<void>>();
  let failure: unknown;
  for (let i = 0; i < chunks && failure === undefined; i++) {
    if (gate.paused) ev.status("paused");
    await gate.wait();
    while (inflight.size >= settings.concurrency) await Promise.race(inflight);
    if (failure !== undefined) break;
    const start = i * chunkSize;
    const end = Math.min(size, start + chunkSize);
    const have = committed.get(i);
    const c = await crc.chunk(session, file, start, end, have === undefined);
    if (have !== undefined) {
      if (have !== c.crc32c) {
        throw new ConnectError(
          `chunk ${i} on the server differs from the file: the file changed since the upload began; discard the unfinished upload and send it again`,
          Code.FailedPrecondition,
        );
      }
      done += end - start;
      chunksDone++;
      report();
      continue;
    }
    const data = c.data!;
    const index = i;
    const p: Promise<void> = retrying(() => {
      ev.sent(index);
      return clients.upload.putChunk({ uploadId, chunk: { index: BigInt(index), data, crc32c: c.crc32c } });
    }, ev)
      .then(() => {
        chunksSent++;
        done += end - start;
        chunksDone++;
        report();
        ev.status("sending");
      })
      .catch((err: unknown) => {
        failure ??= err;
      })
      .finally(() => {
        inflight.delete(p);
      });
    inflight.add(p);
  }
  await Promise.all(inflight);
  const whole = await crc.finish(session);
  if (failure !== undefined) throw failure;

  ev.status("verifying");
  let res;
  try {
    res = await retrying(() => clients.upload.completeUpload({ uploadId, size: BigInt(size), crc32c: whole }), ev);
  } catch (err) {
    const ce = ConnectError.from(err);
    // A completion whose answer was lost and that is retried finds the
    // upload gone: the object is there if its checksum matches.
    if (ce.code !== Code.NotFound) throw err;
    const st = await clients.objects.statObject({ key });
    if (st.object?.crc32c !== whole || Number(st.object?.size) !== size) throw err;
    res = { object: st.object, chunkCount: BigInt(chunks) };
  }
  forget(rk);
  const serverCrc = res.object?.crc32c;
  if (serverCrc !== undefined && serverCrc >>> 0 !== whole) {
    throw new ConnectError(
      `the server stored CRC32C ${hex(serverCrc)} but the file's is ${hex(whole)}`,
      Code.DataLoss,
    );
  }
  return {
    key,
    size,
    crc32c: whole,
    serverCrc32c: serverCrc,
    chunksSent,
    chunks,
    resumed,
    elapsedMs: performance.now() - started,
  };
}

/** hex formats a CRC32C as 8 hex digits. */
export function hex(v: number): string {
  return (v >>> 0).toString(16).padStart(8, "0");
}

/**
 * retrying calls fn until it succeeds, a non-transient error, or 8 tries,
 * waiting 0.5 s, 1 s, 2 s… (at most 15 s) between tries.
 */
async function retrying<T>(fn: () => Promise<T>, ev: UploadEvents): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err, attempt) || attempt >= 8) throw err;
      const wait = Math.min(15_000, 500 * 2 ** (attempt - 1));
      ev.status(`${describeError(err)} Trying again in ${(wait / 1000).toFixed(1)} s.`);
      await sleep(wait);
    }
  }
}
