/**
 * Random mutations of small valid checkpoints, for a few seconds per format: every
 * outcome must be tensors or a CheckpointError naming the file; never another kind
 * of exception (a reader bug), a hang, or a crash.
 */
import { describe, expect, it } from 'vitest';
import { describeModel } from '../../src/io/describe_model.js';
import { CheckpointError } from '../../src/io/errors.js';
import { hostFromF32, isFloatDType } from '../../src/io/host_tensor.js';
import { loraMetaTensors } from '../../src/io/lora_meta.js';
import { openCheckpointBytes } from '../../src/io/model_file.js';
import { encodePth } from '../../src/io/pth.js';
import { encodeSafetensors } from '../../src/io/safetensors.js';
import { freshRng, type Rng } from '../helpers.js';
import { dictPickle, flat, handZip, rebuildV2 } from './hand_made.js';

const SECONDS = 3;

const tensors = [
  hostFromF32('emb.weight', [4, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], 'bf16'),
  hostFromF32('blocks.0.att.r_k', [2, 2], [1, -1, 0.5, 2], 'f16'),
  hostFromF32('ln_out.bias', [3], [0.25, 0.5, 1], 'f32'),
  ...loraMetaTensors(8, 2),
];

/** A hand-made .pth with views, a shared storage and a deflated record, to reach the other reader paths. */
const views = flat(
  handZip([
    {
      name: 'v/data.pkl',
      data: dictPickle([
        ['t', rebuildV2('FloatStorage', '0', 12, 1, [3, 2], [1, 3])],
        ['s', rebuildV2('FloatStorage', '0', 12, 4, [2, 2], [2, 1])],
      ]),
      deflate: true,
    },
    { name: 'v/data/0', data: new Uint8Array(Float32Array.from({ length: 12 }, (_, i) => i).buffer) },
  ]),
);

const EXTREMES = [0, 1, 0x7f, 0x80, 0xff];

function mutate(rng: Rng, base: Uint8Array): Uint8Array {
  const b = base.slice();
  switch (rng.int(5)) {
    case 0: // a few random bytes
      for (let k = 1 + rng.int(4); k > 0; k--) b[rng.int(b.length)] = rng.int(256);
      return b;
    case 1: // a run of extreme bytes, e.g. a length field set to 0 or 0xffffffff
      for (let i = rng.int(b.length), k = 1 + rng.int(8); k > 0 && i < b.length; k--, i++) b[i] = EXTREMES[rng.int(EXTREMES.length)];
      return b;
    case 2: // truncated
      return b.subarray(0, rng.int(b.length));
    case 3: {
      // a range removed
      const at = rng.int(b.length);
      return Uint8Array.from([...b.subarray(0, at), ...b.subarray(Math.min(b.length, at + 1 + rng.int(64)))]);
    }
    default: {
      // random bytes inserted
      const at = rng.int(b.length);
      const extra = Array.from({ length: 1 + rng.int(16) }, () => rng.int(256));
      return Uint8Array.from([...b.subarray(0, at), ...extra, ...b.subarray(at)]);
    }
  }
}

function fuzz(name: string, bases: Uint8Array[]): void {
  const rng = freshRng();
  const end = Date.now() + SECONDS * 1000;
  let runs = 0;
  let parsed = 0;
  while (Date.now() < end) {
    const bytes = mutate(rng, bases[rng.int(bases.length)]);
    runs++;
    try {
      const r = openCheckpointBytes(name, bytes);
      const read = r.tensors.map((t) => (isFloatDType(t.dtype) ? r.read(t.name) : t));
      describeModel(read);
      parsed++;
    } catch (e) {
      if (!(e instanceof CheckpointError) || !e.message.startsWith(`${name}: `)) {
        throw new Error(
          `run ${runs}: ${(e as Error)?.name}: ${(e as Error)?.message} [seed ${rng.seed}; rerun with RWKV_TEST_SEED=${rng.seed}]`,
          { cause: e },
        );
      }
    }
  }
  // The mutations must reach past the first checks: some files still parse, most do not.
  expect(runs).toBeGreaterThan(200);
  expect(parsed).toBeGreaterThan(0);
  expect(parsed).toBeLessThan(runs);
}

describe('fuzz (random mutations of valid files)', () => {
  it(`.pth for ${SECONDS} s`, () => fuzz('fuzz.pth', [encodePth(tensors), views]), 30_000);
  it(`.safetensors for ${SECONDS} s`, () => fuzz('fuzz.safetensors', [encodeSafetensors(tensors, { format: 'pt' })]), 30_000);
});
