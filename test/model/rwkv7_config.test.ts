import { describe, expect, it } from 'vitest';
import { rwkv7Dims, rwkv7Shapes, type Rwkv7Dims, type ShapedTensor } from '../../src/model/rwkv7_config.js';

const DIMS: Rwkv7Dims = { nLayer: 3, nEmbd: 128, headSize: 64, nHead: 2, vocab: 256, ffnHidden: 512, dW: 32, dA: 32, dV: 16, dG: 48 };

function tensors(d: Rwkv7Dims): Map<string, ShapedTensor> {
  return new Map([...rwkv7Shapes(d)].map(([k, shape]) => [k, { shape }]));
}

describe('rwkv7Dims', () => {
  it('derives every dimension from the shapes', () => {
    expect(rwkv7Dims(tensors(DIMS))).toEqual(DIMS);
  });
  it('layer 0 has no v0/v1/v2, and placeholders there are ignored', () => {
    const t = tensors(DIMS);
    expect(t.has('blocks.0.att.v1')).toBe(false);
    expect(t.has('blocks.1.att.v1')).toBe(true);
    t.set('blocks.0.att.v0', { shape: [1, 1, 128] });
    expect(rwkv7Dims(t)).toEqual(DIMS);
  });
  it('names a missing key', () => {
    const t = tensors(DIMS);
    t.delete('blocks.2.att.k_a');
    expect(() => rwkv7Dims(t, 'm.pth')).toThrow("m.pth: missing tensor 'blocks.2.att.k_a'");
  });
  it('names a wrong shape with expected and found', () => {
    const t = tensors(DIMS);
    t.set('blocks.1.ffn.value.weight', { shape: [128, 500] });
    expect(() => rwkv7Dims(t, 'm.pth')).toThrow("tensor 'blocks.1.ffn.value.weight' has shape [128,500], expected [128,512]");
  });
  it('refuses unknown tensors', () => {
    const t = tensors(DIMS);
    t.set('blocks.1.att.time_maa_x', { shape: [1, 1, 128] });
    expect(() => rwkv7Dims(t)).toThrow(/unexpected tensor\(s\).*time_maa_x/);
  });
  it('checks n_layer and n_embd given by the user against the weights', () => {
    expect(() => rwkv7Dims(tensors(DIMS), 'm.pth', { nLayer: 12 })).toThrow('n_layer is 12 in the config but the weights have 3 layers');
    expect(() => rwkv7Dims(tensors(DIMS), 'm.pth', { nEmbd: 768 })).toThrow('n_embd is 768 in the config but the weights have n_embd 128');
    expect(rwkv7Dims(tensors(DIMS), 'm.pth', { nLayer: 3, nEmbd: 128 }).nLayer).toBe(3);
  });
  it('checks heads × head size against n_embd', () => {
    const t = tensors(DIMS);
    t.set('blocks.0.att.r_k', { shape: [3, 64] });
    expect(() => rwkv7Dims(t)).toThrow(/heads × head size = 192/);
  });
});

describe('rwkv7DefaultDims', () => {
  it("reproduces the spec's table of low-rank sizes", async () => {
    const { rwkv7DefaultDims } = await import('../../src/model/rwkv7_init.js');
    const row = (L: number, C: number) => {
      const d = rwkv7DefaultDims(L, C, 65536);
      return [d.dW, d.dA, d.dV, d.dG];
    };
    expect(row(12, 768)).toEqual([64, 64, 32, 128]);
    expect(row(24, 1024)).toEqual([64, 64, 32, 128]);
    expect(row(24, 2048)).toEqual([96, 96, 64, 256]);
    expect(row(32, 2560)).toEqual([96, 96, 64, 320]);
    expect(row(32, 4096)).toEqual([128, 128, 96, 480]);
  });
});
