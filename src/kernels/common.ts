/** Shared pieces of every kernel: grid maths, uniform packing and WGSL snippets. */

export const MAX_WG_PER_DIM = 65535;

/**
 * A 2-D grid of `groups` workgroups, since one dimension holds at most 65535.
 * Shaders recover the linear index with WGSL_LINEAR_WG and bounds-check it.
 */
export function grid1d(groups: number): [number, number] {
  if (groups <= MAX_WG_PER_DIM) return [Math.max(groups, 0), 1];
  const y = Math.ceil(groups / MAX_WG_PER_DIM);
  return [Math.ceil(groups / y), y];
}

/** WGSL expression for the linear workgroup index of a grid1d dispatch. */
export const WGSL_LINEAR_WG = '(wid.x + wid.y * nwg.x)';

/**
 * pow2(e) = 2^e, exact for e in [-126, 127]: x·pow2(e) is ldexp(x, e) wherever the result
 * is a normal f32, and on the H200 NVIDIA's ldexp cost the tensor-core products' epilogue
 * as much as the rest of it (bench/RESULTS.md).
 */
export const WGSL_POW2 = 'fn pow2(e: i32) -> f32 { return bitcast<f32>(u32(e + 127) << 23u); }';

/** Packs uniform fields (u32, i32 or f32, each one 4-byte slot) in declaration order. */
export function uniforms(fields: readonly (readonly [type: 'u32' | 'i32' | 'f32', value: number])[]): ArrayBuffer {
  const buf = new ArrayBuffer(Math.max(16, Math.ceil((fields.length * 4) / 16) * 16));
  const dv = new DataView(buf);
  fields.forEach(([type, v], i) => {
    if (type === 'f32') dv.setFloat32(4 * i, v, true);
    else if (type === 'i32') dv.setInt32(4 * i, v, true);
    else {
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`uniform field ${i}: ${v} is not a u32`);
      dv.setUint32(4 * i, v, true);
    }
  });
  return buf;
}

/**
 * WGSL function \`name(i) -> f32\` reading element i of a bf16 array stored two per u32
 * in \`array\`. Exact: a bf16 value is the top half of an f32.
 */
export function wgslBf16Reader(name: string, array: string): string {
  return /* wgsl */ `
fn ${name}(i: u32) -> f32 {
  let w = ${array}[i >> 1u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) == 1u));
}
`;
}

/** WGSL function \`name(i) -> f32\` reading element i of an f16 array stored two per u32 in \`array\`. */
export function wgslF16Reader(name: string, array: string): string {
  return /* wgsl */ `
fn ${name}(i: u32) -> f32 {
  return unpack2x16float(${array}[i >> 1u])[i & 1u];
}
`;
}

export function ceilDiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}
