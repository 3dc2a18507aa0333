// What the page tells a person for each Connect error code.

import { Code, ConnectError } from "@connectrpc/connect";

const advice: Record<Code, string> = {
  [Code.Canceled]: "Cancelled.",
  [Code.Unknown]:
    "The server could not be reached, or answered with something unexpected. Check the server address and your connection; " +
    "a server on another origin must allow this page's origin (ferry serve --cors-origin).",
  [Code.InvalidArgument]: "The server refused the request as invalid.",
  [Code.DeadlineExceeded]: "The server took too long to answer.",
  [Code.NotFound]: "Not found (an upload may have expired, or an object been deleted).",
  [Code.AlreadyExists]: "An object with this key already exists.",
  [Code.PermissionDenied]: "Permission denied: the token does not allow this.",
  [Code.ResourceExhausted]: "The server is busy or the request is too large; try again later or with smaller chunks.",
  [Code.FailedPrecondition]: "The server's checks failed (missing chunks, or the file's checksum differs).",
  [Code.Aborted]: "Another write to the same key happened at the same time; try again.",
  [Code.OutOfRange]: "The requested range is outside the object.",
  [Code.Unimplemented]: "The server does not offer this call: is this a ferry server?",
  [Code.Internal]: "The server failed while handling the request.",
  [Code.Unavailable]: "The server or its storage is unavailable right now; try again.",
  [Code.DataLoss]: "Data was lost or corrupted on the way.",
  [Code.Unauthenticated]: "The server needs a valid token: enter it under Settings.",
};

/**
 * isRetryable reports whether the same request may well succeed if sent
 * again, after attempt tries: network failures (UNKNOWN), UNAVAILABLE and
 * DEADLINE_EXCEEDED always; RESOURCE_EXHAUSTED (the server's memory and
 * stream limits were full for too long, or a message too large) for the
 * first 3 tries only.
 */
export function isRetryable(err: unknown, attempt: number): boolean {
  const code = ConnectError.from(err).code;
  if (code === Code.ResourceExhausted) return attempt < 3;
  return code === Code.Unavailable || code === Code.Unknown || code === Code.DeadlineExceeded;
}

/**
 * PageError is a failure the page itself explains (such as no usable
 * server): describeError shows its message as it is.
 */
export class PageError extends Error {
  override name = "PageError";
}

/** describeError turns any error into one sentence or two for a person. */
export function describeError(err: unknown): string {
  if (err instanceof PageError) return err.message;
  const ce = ConnectError.from(err);
  const text = advice[ce.code] ?? "Unexpected error.";
  const name = Code[ce.code] ?? String(ce.code);
  return ce.rawMessage !== "" ? `${text} (${name}: ${ce.rawMessage})` : `${text} (${name})`;
}
