/** Where writers put bytes: a file, written in order, or memory. */
import { writeSync } from 'node:fs';

export interface ByteSink {
  /** Bytes written so far. */
  readonly position: number;
  write(bytes: Uint8Array): void;
}

export function fileSink(fd: number): ByteSink {
  let position = 0;
  return {
    get position() {
      return position;
    },
    write(bytes) {
      for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
      position += bytes.length;
    },
  };
}

export class MemorySink implements ByteSink {
  private readonly chunks: Uint8Array[] = [];
  position = 0;

  write(bytes: Uint8Array): void {
    this.chunks.push(bytes.slice());
    this.position += bytes.length;
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(this.position);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}
