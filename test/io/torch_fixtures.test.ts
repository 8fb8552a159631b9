/**
 * Files written by real PyTorch 2.11 and safetensors 0.8 (test/io/fixtures,
 * made by make_torch_fixtures.py there): every float tensor must read back
 * bit-exactly as the contiguous copy safetensors stored beside it.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isFloatDType } from '../../src/io/host_tensor.js';
import { loadCheckpoint, openCheckpoint } from '../../src/io/model_file.js';

const FIX = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

function expectMatches(file: string, expectedFile: string, names: string[]): void {
  const r = openCheckpoint(join(FIX, file));
  const want = openCheckpoint(join(FIX, expectedFile));
  try {
    expect(r.tensors.map((t) => t.name)).toEqual(names);
    for (const t of r.tensors) {
      const w = want.tensors.find((x) => x.name === t.name)!;
      expect([t.dtype, t.shape], t.name).toEqual([w.dtype, w.shape]);
      if (!isFloatDType(t.dtype)) continue;
      expect(Buffer.from(r.read(t.name).data).equals(Buffer.from(want.read(t.name).data)), t.name).toBe(true);
    }
  } finally {
    r.close();
    want.close();
  }
}

const SMALL = ['emb.weight', 'blocks.0.att.r_k', 'ln_out.bias'];

describe('files written by PyTorch', () => {
  it('views: 0-d, empty, transposed, sliced, expanded and shared storages, and an int64 tensor', () => {
    expectMatches('torch_views.pth', 'torch_views.expected.st', [
      ...SMALL, 'scalar', 'empty', 'view.transposed', 'view.slice', 'view.expand', 'view.bf16_t', 'step',
    ]);
  });

  it("a module's state_dict (OrderedDict with _metadata)", () => {
    expectMatches('torch_module.pth', 'torch_module.expected.st', ['0.weight', '0.bias', '1.weight', '1.bias']);
  });

  it("pickle protocol 4, a file-like target ('archive/' folder), and a {'state_dict': …} wrapper", () => {
    for (const f of ['torch_proto4.pth', 'torch_filelike.pth', 'torch_wrapped.pth']) expectMatches(f, 'torch_small.expected.st', SMALL);
  });

  it('an nn.Parameter', () => {
    const p = loadCheckpoint(join(FIX, 'torch_param.pth')).get('p')!;
    expect([p.dtype, p.shape, p.data.length]).toEqual(['f32', [2, 2], 16]);
  });

  it('a file written by the safetensors library', () => {
    // the reference writer orders by dtype (F32, BF16, F16), then name
    expectMatches('hf.safetensors', 'torch_small.expected.st', ['ln_out.bias', 'emb.weight', 'blocks.0.att.r_k']);
    const r = openCheckpoint(join(FIX, 'hf.safetensors'));
    expect(r.metadata).toEqual({ format: 'pt' });
    r.close();
  });

  it('the legacy (pre-1.6) format is refused with a way to convert it', () => {
    expect(() => openCheckpoint(join(FIX, 'torch_legacy.pth'))).toThrow(/torch_legacy\.pth: this is the legacy \(pre-1\.6\) torch serialization format/);
  });
});
