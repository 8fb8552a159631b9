/**
 * RWKV-7 (x070) architecture from a checkpoint's tensors: every dimension is
 * derived from the shapes, and every expected key is checked, so a model that
 * does not match fails at once with the key, the expected and the found shape.
 */

export interface ShapedTensor {
  readonly shape: readonly number[];
}

export interface Rwkv7Dims {
  nLayer: number;
  nEmbd: number;
  headSize: number;
  nHead: number;
  vocab: number;
  ffnHidden: number;
  dW: number;
  dA: number;
  dV: number;
  dG: number;
}

/** Shape of every tensor of layer `l` (layer 0 has no v0/v1/v2). */
export function rwkv7LayerShapes(d: Rwkv7Dims, l: number): Map<string, number[]> {
  const C = d.nEmbd;
  const p = `blocks.${l}.`;
  const s = new Map<string, number[]>();
  if (l === 0) {
    s.set(`${p}ln0.weight`, [C]);
    s.set(`${p}ln0.bias`, [C]);
  }
  for (const n of ['ln1', 'ln2']) {
    s.set(`${p}${n}.weight`, [C]);
    s.set(`${p}${n}.bias`, [C]);
  }
  for (const n of ['x_r', 'x_w', 'x_k', 'x_v', 'x_a', 'x_g', 'w0', 'a0', 'k_k', 'k_a']) s.set(`${p}att.${n}`, [1, 1, C]);
  s.set(`${p}att.w1`, [C, d.dW]);
  s.set(`${p}att.w2`, [d.dW, C]);
  s.set(`${p}att.a1`, [C, d.dA]);
  s.set(`${p}att.a2`, [d.dA, C]);
  if (l > 0) {
    s.set(`${p}att.v0`, [1, 1, C]);
    s.set(`${p}att.v1`, [C, d.dV]);
    s.set(`${p}att.v2`, [d.dV, C]);
  }
  s.set(`${p}att.g1`, [C, d.dG]);
  s.set(`${p}att.g2`, [d.dG, C]);
  s.set(`${p}att.r_k`, [d.nHead, d.headSize]);
  for (const n of ['receptance', 'key', 'value', 'output']) s.set(`${p}att.${n}.weight`, [C, C]);
  s.set(`${p}att.ln_x.weight`, [C]);
  s.set(`${p}att.ln_x.bias`, [C]);
  s.set(`${p}ffn.x_k`, [1, 1, C]);
  s.set(`${p}ffn.key.weight`, [d.ffnHidden, C]);
  s.set(`${p}ffn.value.weight`, [C, d.ffnHidden]);
  return s;
}

export function rwkv7Shapes(d: Rwkv7Dims): Map<string, number[]> {
  const s = new Map<string, number[]>([
    ['emb.weight', [d.vocab, d.nEmbd]],
    ['ln_out.weight', [d.nEmbd]],
    ['ln_out.bias', [d.nEmbd]],
    ['head.weight', [d.vocab, d.nEmbd]],
  ]);
  for (let l = 0; l < d.nLayer; l++) for (const [k, v] of rwkv7LayerShapes(d, l)) s.set(k, v);
  return s;
}

export class ModelShapeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelShapeError';
  }
}

function need(t: ReadonlyMap<string, ShapedTensor>, key: string, source: string): readonly number[] {
  const x = t.get(key);
  if (!x) throw new ModelShapeError(`${source}: missing tensor '${key}' (an RWKV-7 x070 checkpoint has it)`);
  return x.shape;
}

/** Layer-0 v0/v1/v2 are placeholders some RWKV-LM checkpoints carry; the model ignores them. */
const IGNORED_LAYER0 = /^blocks\.0\.att\.v[012]$/;

/**
 * Derives the dimensions from the tensors and checks every key and shape.
 * `expect` holds user-given n_layer / n_embd, which must agree with the weights.
 */
export function rwkv7Dims(
  t: ReadonlyMap<string, ShapedTensor>,
  source = 'model',
  expect: { nLayer?: number; nEmbd?: number } = {},
): Rwkv7Dims {
  const [vocab, nEmbd] = need(t, 'emb.weight', source);
  const [nHead, headSize] = need(t, 'blocks.0.att.r_k', source);
  let nLayer = 0;
  while (t.has(`blocks.${nLayer}.ln1.weight`)) nLayer++;
  if (nLayer === 0) throw new ModelShapeError(`${source}: no blocks found (missing 'blocks.0.ln1.weight')`);
  const dims: Rwkv7Dims = {
    nLayer,
    nEmbd,
    headSize,
    nHead,
    vocab,
    ffnHidden: need(t, 'blocks.0.ffn.key.weight', source)[0],
    dW: need(t, 'blocks.0.att.w1', source)[1],
    dA: need(t, 'blocks.0.att.a1', source)[1],
    dV: nLayer > 1 ? need(t, 'blocks.1.att.v1', source)[1] : 0,
    dG: need(t, 'blocks.0.att.g1', source)[1],
  };
  if (nHead * headSize !== nEmbd) {
    throw new ModelShapeError(
      `${source}: blocks.0.att.r_k is [${nHead},${headSize}], so heads × head size = ${nHead * headSize}, but emb.weight says n_embd = ${nEmbd}`,
    );
  }
  if (expect.nLayer !== undefined && expect.nLayer !== nLayer) {
    throw new ModelShapeError(`${source}: n_layer is ${expect.nLayer} in the config but the weights have ${nLayer} layers`);
  }
  if (expect.nEmbd !== undefined && expect.nEmbd !== nEmbd) {
    throw new ModelShapeError(`${source}: n_embd is ${expect.nEmbd} in the config but the weights have n_embd ${nEmbd}`);
  }
  const shapes = rwkv7Shapes(dims);
  for (const [key, shape] of shapes) {
    const found = need(t, key, source);
    if (found.length !== shape.length || found.some((v, i) => v !== shape[i])) {
      throw new ModelShapeError(`${source}: tensor '${key}' has shape [${found.join(',')}], expected [${shape.join(',')}]`);
    }
  }
  const unknown = [...t.keys()].filter((k) => !shapes.has(k) && !IGNORED_LAYER0.test(k));
  if (unknown.length) {
    throw new ModelShapeError(
      `${source}: unexpected tensor(s) for an RWKV-7 x070 model with ${nLayer} layers: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ` and ${unknown.length - 5} more` : ''}`,
    );
  }
  return dims;
}
