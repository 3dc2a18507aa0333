// Downloading one object: the Download server stream reassembled into a
// Blob, its length and CRC32C checked, then saved through an <a download>.

import { createCRC32 } from "hash-wasm";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Clients } from "./client";
import { hex } from "./upload";

/** The outcome of a download. */
export interface DownloadResult {
  blob: Blob;
  /** Whether the object had a CRC32C and the bytes matched it. */
  verified: boolean;
  elapsedMs: number;
}

/**
 * downloadObject fetches the whole object named key. onProgress gets the
 * bytes received and the object's size. It fails with DATA_LOSS when the
 * bytes received are not the object's size or its CRC32C.
 */
export async function downloadObject(
  clients: Clients,
  key: string,
  onProgress: (got: number, size: number) => void,
  signal?: AbortSignal,
): Promise<DownloadResult> {
  const started = performance.now();
  const hasher = await createCRC32(0x82f63b78);
  hasher.init();
  const parts: Uint8Array<ArrayBuffer>[] = [];
  let size = -1;
  let want: number | undefined;
  let contentType = "";
  let got = 0;
  for await (const res of clients.download.download({ key }, { signal })) {
    switch (res.message.case) {
      case "header":
        size = Number(res.message.value.length);
        want = res.message.value.object?.crc32c;
        contentType = res.message.value.object?.contentType ?? "";
        onProgress(0, size);
        break;
      case "data":
        parts.push(res.message.value as Uint8Array<ArrayBuffer>);
        hasher.update(res.message.value);
        got += res.message.value.length;
        onProgress(got, size);
        break;
    }
  }
  if (size < 0 || got !== size) {
    throw new ConnectError(`received ${got} bytes of an object of ${size}`, Code.DataLoss);
  }
  const crc = parseInt(hasher.digest("hex"), 16) >>> 0;
  if (want !== undefined && want >>> 0 !== crc) {
    throw new ConnectError(`received bytes have CRC32C ${hex(crc)}, the object ${hex(want)}`, Code.DataLoss);
  }
  return {
    blob: new Blob(parts, { type: contentType || "application/octet-stream" }),
    verified: want !== undefined,
    elapsedMs: performance.now() - started,
  };
}

/** saveBlob offers blob to the person as a file named name. */
export function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  // The download has its own copy once it starts.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
