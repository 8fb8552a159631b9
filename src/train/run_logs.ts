/**
 * The run's text logs in proj_dir, as RWKV-PEFT writes them, so its plotting
 * tools read ours:
 * - train_log.txt: "NEW RUN <timestamp>" and the settings as a Python dict at
 *   every start, then per epoch "<epoch> <loss .6f> <exp(loss) .4f> <lr .8f> <datetime> <epoch index>";
 * - loss_data.jsonl: one {"loss", "t_cost" (it/s), "kt_s"} line per optimizer step.
 */
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';

/** A number as Python's repr prints it (floats keep a ".0"; small and large ones use e-notation). */
function pyNumber(v: number, isFloat: boolean): string {
  if (!isFloat && Number.isInteger(v)) return String(v);
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf';
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-4 || a >= 1e16)) {
    const [m, e] = v.toExponential().split('e');
    const exp = Number(e);
    return `${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  const s = String(v);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** A JSON-like value as Python's repr of the same dict/list/str/bool would print it. */
export function pyRepr(v: unknown, floatKeys: ReadonlySet<string> = new Set(), key = ''): string {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') return pyNumber(v, floatKeys.has(key));
  if (typeof v === 'string') return v.includes("'") && !v.includes('"') ? `"${v}"` : `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n')}'`;
  if (Array.isArray(v)) return `[${v.map((x) => pyRepr(x, floatKeys)).join(', ')}]`;
  return `{${Object.entries(v as object).map(([k, x]) => `'${k}': ${pyRepr(x, floatKeys, k)}`).join(', ')}}`;
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

/** datetime.today().strftime("%Y-%m-%d-%H-%M-%S"). */
function runTimestamp(d: Date): string {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}-${pad2(d.getHours())}-${pad2(d.getMinutes())}-${pad2(d.getSeconds())}`;
}

/** str(datetime.now()): "2025-01-31 12:34:56.789000". */
function pyDatetime(d: Date): string {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${String(d.getMilliseconds() * 1000).padStart(6, '0')}`;
}

export class TrainLog {
  constructor(readonly path: string) {}

  newRun(settings: object, floatKeys: ReadonlySet<string>, note = ''): void {
    appendFileSync(this.path, `NEW RUN ${runTimestamp(new Date())}${note ? ` ${note}` : ''}\n${pyRepr(settings, floatKeys)}\n`);
  }

  /** `epoch` is epoch_begin + index; `index` counts this run's epochs from 0. */
  epoch(epoch: number, meanLoss: number, lr: number, index: number): void {
    appendFileSync(this.path, `${epoch} ${meanLoss.toFixed(6)} ${Math.exp(meanLoss).toFixed(4)} ${lr.toFixed(8)} ${pyDatetime(new Date())} ${index}\n`);
  }
}

export interface LossRecord {
  loss: number;
  /** Optimizer steps per second. */
  t_cost: number;
  /** Thousands of tokens per second. */
  kt_s: number;
}

export class LossData {
  constructor(readonly path: string) {}

  /** Starts the file afresh, or keeps the first `keepSteps` lines when resuming; returns their losses. */
  begin(keepSteps: number): number[] {
    if (keepSteps === 0 || !existsSync(this.path)) {
      writeFileSync(this.path, '');
      return [];
    }
    const lines = readFileSync(this.path, 'utf8').split('\n').filter((l) => l.trim() !== '').slice(0, keepSteps);
    writeFileSync(this.path, lines.map((l) => l + '\n').join(''));
    return lines.map((l, i) => {
      const loss = (JSON.parse(l) as Partial<LossRecord>).loss;
      if (typeof loss !== 'number') throw new Error(`${this.path}: line ${i + 1} has no numeric "loss"`);
      return loss;
    });
  }

  append(records: readonly LossRecord[]): void {
    if (records.length) appendFileSync(this.path, records.map((r) => JSON.stringify(r) + '\n').join(''));
  }
}
