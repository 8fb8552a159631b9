/**
 * Atomic file writes: the content goes to `<path>.tmp-<pid>` and is renamed over
 * `path` only once complete, so a crash never leaves a half-written checkpoint
 * under the real name. An existing file is kept unless `overwrite` is set.
 */
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync } from 'node:fs';
import { fileSink, type ByteSink } from './byte_sink.js';

export interface WriteOptions {
  /** Replace an existing file (default false: refuse). */
  overwrite?: boolean;
}

function refuseExisting(path: string, opts: WriteOptions): void {
  if (!opts.overwrite && existsSync(path)) {
    throw new Error(`${path}: the file already exists; refusing to overwrite it (--overwrite, or overwrite: true, replaces it)`);
  }
}

export function writeAtomic(path: string, opts: WriteOptions, write: (sink: ByteSink) => void): void {
  refuseExisting(path, opts);
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    try {
      write(fileSink(fd));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    refuseExisting(path, opts);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
