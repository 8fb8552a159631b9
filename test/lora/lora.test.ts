import { describe, expect, it } from 'vitest';
import { buildLayout, initialValues, loraSpecs, RWKV7_LORA_TARGETS } from '../../src/lora/lora.js';

describe('LoRA layout and initialisation', () => {
  const cfg = { r: 4, alpha: 8, dropout: 0, targets: RWKV7_LORA_TARGETS };
  it('lays out A [r,in] and B [out,r] for every target of every layer, aligned', () => {
    const layout = buildLayout(loraSpecs(2, 32, 128, cfg));
    expect(layout.entries).toHaveLength(2 * 6 * 2);
    expect(layout.byName.get('blocks.1.ffn.key.lora_A')!.shape).toEqual([4, 32]);
    expect(layout.byName.get('blocks.1.ffn.key.lora_B')!.shape).toEqual([128, 4]);
    expect(layout.byName.get('blocks.0.ffn.value.lora_A')!.shape).toEqual([4, 128]);
    for (const e of layout.entries) expect(e.offset % 64).toBe(0);
    const last = layout.entries[layout.entries.length - 1];
    expect(layout.size).toBeGreaterThanOrEqual(last.offset + last.size);
  });
  it('initialises A uniform in ±1/√in, B at zero, other entries from the base model', () => {
    const layout = buildLayout([...loraSpecs(1, 64, 256, cfg), { name: 'blocks.0.ln1.weight', shape: [64] }]);
    const base = new Float32Array(64).map((_, i) => i / 10);
    const v = initialValues(layout, 7, () => base);
    const a = layout.byName.get('blocks.0.att.key.lora_A')!;
    const vals = v.subarray(a.offset, a.offset + a.size);
    expect(Math.max(...vals.map(Math.abs))).toBeLessThanOrEqual(1 / 8);
    expect(Math.max(...vals.map(Math.abs))).toBeGreaterThan(0.1); // spread over the range, not a constant
    const b = layout.byName.get('blocks.0.att.key.lora_B')!;
    expect(v.subarray(b.offset, b.offset + b.size).every((x) => x === 0)).toBe(true);
    const ln = layout.byName.get('blocks.0.ln1.weight')!;
    expect(Array.from(v.subarray(ln.offset, ln.offset + 64))).toEqual(Array.from(base));
    expect(initialValues(layout, 7, () => base)).toEqual(v);
    expect(initialValues(layout, 8, () => base)).not.toEqual(v);
  });
  it('rejects impossible settings', () => {
    expect(() => loraSpecs(1, 8, 32, { ...cfg, r: 0 })).toThrow(/r must be a positive integer/);
    expect(() => loraSpecs(1, 8, 32, { ...cfg, dropout: 1 })).toThrow(/dropout must be in \[0, 1\)/);
  });
});
