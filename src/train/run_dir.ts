/**
 * proj_dir and the files a run owns there. A run refuses to start where another
 * run left outputs unless told to resume it or to overwrite it, and holds a lock
 * file while it runs so two runs never write the same folder.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const RUN_FILES = {
  config: 'config.json',
  log: 'train_log.txt',
  lossData: 'loss_data.jsonl',
  lossCurve: 'loss.svg',
  checkpoint: 'checkpoint.st',
  init: 'rwkv-init.pth',
  merged: 'rwkv-merged.pth',
  mergedSt: 'rwkv-merged.st',
} as const;

/** rwkv-{epoch}.pth, and its Ai00 form rwkv-{epoch}.st (lora_st). */
const ADAPTER = /^rwkv-\d+\.(pth|st)$/;
const LOCK = '.rwkv-lora-gpu.lock';

export function adapterPath(dir: string, epoch: number, ext: '.pth' | '.st' = '.pth'): string {
  return join(dir, `rwkv-${epoch}${ext}`);
}

/** The files of a run present in `dir`. */
export function runOutputs(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const own = new Set<string>(Object.values(RUN_FILES));
  return readdirSync(dir).filter((f) => own.has(f) || ADAPTER.test(f)).sort();
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface RunDirOptions {
  resume: boolean;
  overwrite: boolean;
  /** Files the run must keep even when overwriting (e.g. a base model the config points at). */
  keep?: readonly string[];
}

/**
 * Creates proj_dir, takes its lock and applies the resume/overwrite rules.
 * Returns the function that releases the lock.
 */
export function claimRunDir(dir: string, o: RunDirOptions): () => void {
  mkdirSync(dir, { recursive: true });
  const lock = join(dir, LOCK);
  if (existsSync(lock)) {
    const pid = Number(readFileSync(lock, 'utf8').trim());
    if (Number.isInteger(pid) && pid !== process.pid && processAlive(pid)) {
      throw new Error(`${dir}: another training run (process ${pid}) is writing this folder; wait for it or use another proj_dir`);
    }
  }
  const existing = runOutputs(dir);
  if (o.resume) {
    if (!existsSync(join(dir, RUN_FILES.checkpoint))) {
      throw new Error(`${dir}: nothing to resume: there is no ${RUN_FILES.checkpoint} (a run writes it at each epoch's end and when interrupted)`);
    }
  } else if (existing.length) {
    if (!o.overwrite) {
      throw new Error(
        `${dir} holds another run's outputs (${existing.slice(0, 4).join(', ')}${existing.length > 4 ? ', …' : ''}); ` +
          'resume it with resume: true (--resume), replace it with --overwrite (overwrite: true), or choose another proj_dir',
      );
    }
    const keep = new Set(o.keep ?? []);
    for (const f of existing) if (!keep.has(join(dir, f))) rmSync(join(dir, f));
  }
  writeFileSync(lock, String(process.pid));
  return () => rmSync(lock, { force: true });
}
