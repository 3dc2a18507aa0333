// Unfinished uploads remembered in localStorage, so that after a reload or
// a lost connection choosing the same file again resumes its upload.

/** What the page remembers of one unfinished upload. */
export interface SavedUpload {
  uploadId: string;
  /** The server the upload lives on ("" for the page's own origin). */
  server: string;
  key: string;
  name: string;
  size: number;
  lastModified: number;
  chunkSize: number;
}

const prefix = "ferry.upload.v1:";

/**
 * resumeKey names a file as localStorage remembers it: by name, size and
 * last-modified time (a browser gives a page nothing more stable).
 */
export function resumeKey(f: { name: string; size: number; lastModified: number }): string {
  return `${prefix}${f.size}:${f.lastModified}:${f.name}`;
}

/** loadSaved returns the unfinished upload of a file, if any. */
export function loadSaved(key: string): SavedUpload | undefined {
  try {
    const s = localStorage.getItem(key);
    return s ? (JSON.parse(s) as SavedUpload) : undefined;
  } catch {
    return undefined;
  }
}

/** save remembers an unfinished upload. */
export function save(u: SavedUpload): void {
  try {
    localStorage.setItem(resumeKey(u), JSON.stringify(u));
  } catch {
    // Storage full or disabled: the upload works, it just cannot resume.
  }
}

/** forget drops a finished or discarded upload. */
export function forget(key: string): void {
  try {
    localStorage.removeItem(key);
  } catch {
    // ignore: nothing to forget
  }
}

/** allSaved lists every remembered upload. */
export function allSaved(): SavedUpload[] {
  const out: SavedUpload[] = [];
  try {
    for (let i = 0; i < localStorage.length; i++) {
      const k = localStorage.key(i);
      if (k?.startsWith(prefix)) {
        const u = loadSaved(k);
        if (u) out.push(u);
      }
    }
  } catch {
    // Storage disabled: nothing remembered.
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}
