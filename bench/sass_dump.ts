/**
 * The machine code (SASS) NVIDIA's Vulkan driver compiled our shaders to, read back from the
 * driver's shader disk cache: what the WGSL finally became (register reuse, LDSM/HMMA,
 * merged stores, bounds checks), which no timing shows. On the GPU machine:
 *
 *   export __GL_SHADER_DISK_CACHE=1 __GL_SHADER_DISK_CACHE_PATH=/tmp/glc __GL_SHADER_DISK_CACHE_SKIP_CLEANUP=1
 *   npm run bench -- --parts wkv --layouts 1.5B      # anything that builds the kernels of interest
 *   node --import tsx bench/sass_dump.ts /tmp/glc $OUT [nvdisasm]
 *
 * It writes shader-N.bin (the raw code) and shader-N.sass per compute shader and prints each
 * one's instruction mix. The cache keeps no kernel names: tell shaders apart by their mix,
 * or cache one kernel at a time.
 * The layout read here was found on driver 580.159 (H200), not documented by NVIDIA: each
 * cache entry is a zstd frame preceded by its compressed and decompressed sizes (u32 each);
 * a compute shader's entry starts with "NVDANVVMNVuc" and holds its instructions, 16 bytes
 * each, from byte 408 to its EXIT (sm_90 opcode 0x94d in the low 12 bits).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Decompress } from 'fzstd';

const [cacheDir, outDir, nvdisasm = '/usr/local/cuda/bin/nvdisasm'] = process.argv.slice(2);
if (!cacheDir || !outDir) throw new Error('usage: node --import tsx bench/sass_dump.ts CACHE_DIR OUT_DIR [NVDISASM]');

const MAGIC = Buffer.from('NVDANVVMNVuc');
const ZSTD = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const CODE_START = 408;
const EXIT = 0x94d;
const COUNTED = ['FFMA', 'FMUL', 'FADD', 'HMMA', 'LDSM', 'LDS', 'STS', 'LDG', 'STG', 'LDL', 'STL', 'SHFL', 'BAR', 'ISETP'];

const files = (dir: string): string[] => readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));

/**
 * The decompressed entries of one cache file. Most frames end in a few bytes that zstd
 * rejects once the declared content is out (the zstd tool says as much, and prints it all),
 * so an entry counts when its declared size came out, whatever follows.
 */
function entries(file: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = file.indexOf(ZSTD); i >= 8; i = file.indexOf(ZSTD, i + 4)) {
    const [size, length] = [file.readUInt32LE(i - 8), file.readUInt32LE(i - 4)];
    const chunks: Uint8Array[] = [];
    try {
      // (The last entry's stated size ran 4 bytes past the end of its file.)
      new Decompress((c) => chunks.push(c)).push(file.subarray(i, i + size), true);
    } catch {
      // Checked by the length below.
    }
    const entry = Buffer.concat(chunks);
    if (entry.length === length) out.push(entry);
  }
  return out;
}

/** The instructions of a compute shader's entry from `start`, up to and including its last EXIT. */
function code(entry: Buffer, start: number): Buffer | undefined {
  if (!entry.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  let end = -1;
  for (let o = start; o + 16 <= entry.length; o += 16) if ((entry.readUInt16LE(o) & 0xfff) === EXIT) end = o + 16;
  return end > 0 ? entry.subarray(start, end) : undefined;
}

/**
 * Disassembles an entry's code: undefined for an entry that is no compute shader, an Error
 * when nvdisasm rejects it. Where it rejects the code from byte 408 (a longer header: seen
 * on a kernel with 17 bindings and several workgroup arrays), it is tried from the next
 * 16-byte steps up to 1 KiB later. (The WKV7 column pass of 7c67f14 still fails from every
 * one of them.)
 */
function disassemble(entry: Buffer, raw: string): string | Error | undefined {
  let error = '';
  for (let start = CODE_START; start <= CODE_START + 1024; start += 16) {
    const bin = code(entry, start);
    if (!bin) return undefined;
    writeFileSync(raw, bin);
    const r = spawnSync(nvdisasm, ['--binary', 'SM90', raw], { encoding: 'utf8' });
    if (r.status === 0) return r.stdout;
    error ||= (r.stderr || (r.error?.message ?? '')).split('\n')[0];
  }
  return new Error(`${nvdisasm} rejected ${raw} from every start tried; first error: ${error}`);
}

mkdirSync(outDir, { recursive: true });
let n = 0;
for (const f of files(cacheDir).filter((x) => x.endsWith('.bin'))) {
  for (const entry of entries(readFileSync(f))) {
    const raw = join(outDir, `shader-${n}.bin`);
    const sass = disassemble(entry, raw);
    if (sass === undefined) continue;
    if (sass instanceof Error) {
      console.log(`shader-${n}: not disassembled (${sass.message})`);
      n++;
      continue;
    }
    writeFileSync(join(outDir, `shader-${n}.sass`), sass);
    const ops = sass.split('\n').flatMap((l) => /\*\/\s+(?:@!?U?P\w+\s+)?([A-Z0-9]+)/.exec(l)?.[1] ?? []);
    const mix = COUNTED.map((op) => `${op} ${ops.filter((x) => x === op).length}`).join(', ');
    console.log(`shader-${n}: ${ops.length} instructions; ${mix}`);
    n++;
  }
}
if (n === 0) throw new Error(`no compute shaders in ${cacheDir}: was the command run with __GL_SHADER_DISK_CACHE_PATH=${cacheDir}?`);
