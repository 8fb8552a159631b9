/** train_log.txt and loss_data.jsonl in RWKV-PEFT's formats; resuming keeps the finished steps' lines. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LossData, pyRepr, TrainLog } from '../../src/train/run_logs.js';

const dir = mkdtempSync(join(tmpdir(), 'rwkv-logs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('run logs', () => {
  it("prints settings as Python's repr of vars(args) would", () => {
    expect(pyRepr({ a: 'x', b: 6e-4, c: 1e-5, d: 1, e: true, f: ['time', 'ln'], g: { r: 8 }, h: "it's" }, new Set(['b', 'c', 'd'])))
      .toBe(`{'a': 'x', 'b': 0.0006, 'c': 1e-05, 'd': 1.0, 'e': True, 'f': ['time', 'ln'], 'g': {'r': 8}, 'h': "it's"}`);
  });

  it('train_log.txt: NEW RUN header, settings, one line per epoch', () => {
    const log = new TrainLog(join(dir, 'train_log.txt'));
    log.newRun({ ctx_len: 512 }, new Set());
    log.epoch(3, 2.5, 1e-4, 0);
    const lines = readFileSync(log.path, 'utf8').split('\n');
    expect(lines[0]).toMatch(/^NEW RUN \d{4}-\d\d-\d\d-\d\d-\d\d-\d\d$/);
    expect(lines[1]).toBe("{'ctx_len': 512}");
    expect(lines[2]).toMatch(/^3 2\.500000 12\.1825 0\.00010000 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} 0$/);
  });

  it('loss_data.jsonl: one record per step; resuming keeps the first steps and returns their losses', () => {
    const d = new LossData(join(dir, 'loss_data.jsonl'));
    expect(d.begin(0)).toEqual([]);
    d.append([1, 2, 3].map((loss) => ({ loss, t_cost: 2, kt_s: 4 })));
    expect(readFileSync(d.path, 'utf8').split('\n')[0]).toBe('{"loss":1,"t_cost":2,"kt_s":4}');
    expect(d.begin(2)).toEqual([1, 2]);
    expect(readFileSync(d.path, 'utf8').trim().split('\n')).toHaveLength(2);
    writeFileSync(d.path, '{"t_cost":1}\n');
    expect(() => d.begin(1)).toThrow(/line 1 has no numeric "loss"/);
  });
});
