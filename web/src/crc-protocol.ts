// Messages between the page and its CRC32C worker (crc-worker.ts).

/** A request to the worker; id pairs it with its reply. */
export type WorkerRequest =
  /** Begin a whole-file checksum named session. */
  | { op: "start"; id: number; session: string }
  /**
   * Read bytes [start, end) of file, return their CRC32C and add them to
   * the session's whole-file checksum; with keep, return the bytes too.
   */
  | { op: "chunk"; id: number; session: string; file: Blob; start: number; end: number; keep: boolean }
  /** Return the session's whole-file CRC32C and forget the session. */
  | { op: "finish"; id: number; session: string };

/** The worker's reply: crc32c is an unsigned 32-bit value. */
export type WorkerReply =
  | { id: number; ok: true; crc32c?: number; data?: Uint8Array }
  | { id: number; ok: false; error: string };

/** A request before the worker client numbers it. */
type Unnumbered<T> = T extends unknown ? Omit<T, "id"> : never;

/** CrcWorker is the page's side of the CRC32C worker. */
export class CrcWorker {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: WorkerReply & { ok: true }) => void; reject: (e: Error) => void }>();

  constructor(url: URL) {
    this.worker = new Worker(url, { type: "module" });
    this.worker.onmessage = (ev: MessageEvent<WorkerReply>) => {
      const p = this.pending.get(ev.data.id);
      if (!p) return;
      this.pending.delete(ev.data.id);
      if (ev.data.ok) p.resolve(ev.data);
      else p.reject(new Error(`CRC32C worker: ${ev.data.error}`));
    };
    this.worker.onerror = (ev) => {
      for (const p of this.pending.values()) p.reject(new Error(`CRC32C worker failed: ${ev.message}`));
      this.pending.clear();
    };
  }

  private call(req: Unnumbered<WorkerRequest>): Promise<WorkerReply & { ok: true }> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...req, id });
    });
  }

  /** start begins a whole-file checksum. */
  async start(session: string): Promise<void> {
    await this.call({ op: "start", session });
  }

  /** chunk reads file[start, end), returning its CRC32C (and bytes when keep). */
  async chunk(session: string, file: Blob, start: number, end: number, keep: boolean): Promise<{ crc32c: number; data?: Uint8Array }> {
    const r = await this.call({ op: "chunk", session, file, start, end, keep });
    return { crc32c: r.crc32c ?? 0, data: r.data };
  }

  /** finish returns the CRC32C of all chunks of the session, in order. */
  async finish(session: string): Promise<number> {
    const r = await this.call({ op: "finish", session });
    return r.crc32c ?? 0;
  }
}
