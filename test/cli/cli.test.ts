import { describe, expect, it } from 'vitest';
import { cli } from './run_cli.js';

describe('rwkv-lora-gpu CLI', () => {
  it('info --gpu prints the adapter, features, limits and subgroup-matrix configurations', async () => {
    const r = await cli('info', '--gpu');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^adapter: .+/m);
    expect(r.stdout).toMatch(/^features: .*subgroups/m);
    expect(r.stdout).toMatch(/maxStorageBufferBindingSize: \d+/);
    expect(r.stdout).toMatch(/^subgroup matrix configurations:/m);
  });
  it('info --gpu --json is machine-readable', async () => {
    const r = await cli('info', '--gpu', '--json');
    const j = JSON.parse(r.stdout) as { features: string[]; limits: Record<string, number> };
    expect(j.limits.maxBufferSize).toBeGreaterThan(0);
    expect(Array.isArray(j.features)).toBe(true);
  });
  it('exits 2 with usage on an unknown command or option', async () => {
    expect((await cli('frobnicate')).code).toBe(2);
    const r = await cli('info', '--bogus');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bogus/);
  });
  it('--help exits 0', async () => {
    const r = await cli('--help');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/usage:/);
  });
});
