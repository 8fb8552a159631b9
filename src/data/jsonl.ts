/**
 * jsonl training data: one JSON object per line, turned into a token sequence with a
 * per-token loss mask. Every document ends with the end-of-text token 0, which is trained
 * whenever the part before it is (so the model learns to stop). Shapes and templates:
 *
 * - `{"text": t}` — t as is, loss on every token (RWKV-LM make_data.py, json2binidx,
 *   RWKV-PEFT --data_type jsonl/binidx). Empty text is skipped, as json2binidx does.
 * - `{"instruction": i, "input"?: x, "output": o}` — RWKV-PEFT's sft template (Alpaca):
 *   prompt "Below is an instruction that describes a task. Write a response that
 *   appropriately completes the request.\n\n### Instruction:\n{i}\n\n### Response:" (with a
 *   non-empty input, Alpaca's variant "Below is an instruction that describes a task, paired
 *   with an input that provides further context. …### Input:\n{x}\n\n### Response:"), then
 *   the target "{o}\n\x17" (RWKV-PEFT's EOT "\x17"). The prompt takes no loss.
 * - `{"messages": [{"role", "content"}, …]}` — RWKV's chat text: turns "System: …",
 *   "User: …", "Assistant: …" joined by "\n\n"; inside a turn, CRLF becomes LF, runs of
 *   blank lines become one "\n" (a "\n\n" would end the turn) and the ends are trimmed.
 *   Only assistant turns are trained: " {content}" after "Assistant:", plus the "\n\n" or
 *   end-of-text that follows it. "Assistant:" itself is prompt (inference ends the prompt there).
 * - `{"prompt": p, "response": r}` — the chat template with one user and one assistant turn.
 *
 * Each prompt and trained piece is tokenized on its own, so a token never straddles the
 * boundary and the trained tokens are exactly those the model produces at inference.
 */
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { END_OF_TEXT, type WorldTokenizer } from './tokenizer.js';
import type { DocumentSource } from './sampling.js';

export interface Segment {
  text: string;
  /** Whether its tokens are training targets. */
  train: boolean;
}

export interface TokenizedDocument {
  tokens: Int32Array;
  /** 1 where the token is a training target; null when every token is. */
  mask: Uint8Array | null;
}

const SFT_PROMPT =
  'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Response:';
const SFT_PROMPT_WITH_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:';
const SFT_EOT = '\x17';

const ROLES: Record<string, string> = { system: 'System', user: 'User', assistant: 'Assistant' };

const SHAPES =
  'one of {"text"}, {"prompt","response"}, {"instruction","input"?,"output"} or {"messages":[{"role","content"}]}';

function cleanTurn(s: string): string {
  return s.replace(/\r\n/g, '\n').replace(/\n{2,}/g, '\n').trim();
}

/**
 * The template pieces of one parsed jsonl record, or null for a record to skip (empty
 * text). `where` (file and line) names the record in errors.
 */
export function recordSegments(record: unknown, where: string): Segment[] | null {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) {
    throw new Error(`${where}: expected a JSON object, ${SHAPES}, found ${Array.isArray(record) ? 'an array' : JSON.stringify(record)}`);
  }
  const r = record as Record<string, unknown>;
  const str = (field: string, optional = false): string => {
    const v = r[field];
    if (optional && (v === undefined || v === null)) return '';
    if (typeof v !== 'string') throw new Error(`${where}: field "${field}": expected a string, found ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
    return v;
  };
  if ('text' in r) {
    const text = str('text');
    return text === '' ? null : [{ text, train: true }];
  }
  if ('messages' in r) {
    if (!Array.isArray(r.messages)) throw new Error(`${where}: field "messages": expected an array of {"role","content"}, found ${JSON.stringify(r.messages)}`);
    return chatSegments(
      r.messages.map((m: unknown, k: number) => {
        const msg = (typeof m === 'object' && m !== null ? m : {}) as Record<string, unknown>;
        if (typeof msg.role !== 'string' || !(msg.role in ROLES) || typeof msg.content !== 'string') {
          throw new Error(`${where}: messages[${k}]: expected {"role": "system"|"user"|"assistant", "content": string}, found ${JSON.stringify(m)}`);
        }
        return { role: msg.role, content: msg.content };
      }),
      where,
    );
  }
  if ('prompt' in r || 'response' in r) {
    return chatSegments([{ role: 'user', content: str('prompt') }, { role: 'assistant', content: str('response') }], where);
  }
  if ('instruction' in r || 'output' in r) {
    const input = str('input', true);
    const prompt = (input ? SFT_PROMPT_WITH_INPUT : SFT_PROMPT).replace('{instruction}', () => str('instruction')).replace('{input}', () => input);
    return [
      { text: prompt, train: false },
      { text: `${str('output')}\n${SFT_EOT}`, train: true },
    ];
  }
  throw new Error(`${where}: expected ${SHAPES}, found keys ${JSON.stringify(Object.keys(r))}`);
}

function chatSegments(messages: { role: string; content: string }[], where: string): Segment[] {
  if (!messages.some((m) => m.role === 'assistant')) {
    throw new Error(`${where}: messages: expected at least one assistant turn (nothing else is trained), found roles ${JSON.stringify(messages.map((m) => m.role))}`);
  }
  const segments: Segment[] = [];
  messages.forEach(({ role, content }, k) => {
    const sep = k > 0 ? '\n\n' : '';
    const text = cleanTurn(content);
    // The separator before a turn belongs to the turn before it.
    const prevTrained = k > 0 && messages[k - 1].role === 'assistant';
    if (sep) segments.push({ text: sep, train: prevTrained });
    if (role === 'assistant') {
      segments.push({ text: 'Assistant:', train: false });
      segments.push({ text: text ? ` ${text}` : '', train: true });
    } else {
      segments.push({ text: `${ROLES[role]}: ${text}`, train: false });
    }
  });
  return segments;
}

/**
 * Tokens and mask of the segments, plus the end-of-text token, which is trained when the
 * last segment is. Runs of segments with the same flag are tokenized together.
 */
export function tokenizeSegments(segments: readonly Segment[], tok: WorldTokenizer): TokenizedDocument {
  const runs: { ids: number[]; train: boolean }[] = [];
  let n = 1;
  for (let i = 0; i < segments.length; ) {
    let text = '';
    const train = segments[i].train;
    for (; i < segments.length && segments[i].train === train; i++) text += segments[i].text;
    const ids = tok.encode(text);
    runs.push({ ids, train });
    n += ids.length;
  }
  const tokens = new Int32Array(n);
  const mask = new Uint8Array(n);
  let at = 0;
  for (const { ids, train } of runs) {
    tokens.set(ids, at);
    mask.fill(train ? 1 : 0, at, at + ids.length);
    at += ids.length;
  }
  tokens[at] = END_OF_TEXT;
  mask[at] = runs.length > 0 && runs[runs.length - 1].train ? 1 : 0;
  return { tokens, mask: mask.every((m) => m === 1) ? null : mask };
}

/** Lines of a text file, read in 1 MiB chunks (no size limit), with 1-based numbers. */
function* fileLines(path: string): Generator<{ line: number; text: string }> {
  const fd = openSync(path, 'r');
  try {
    const decoder = new TextDecoder('utf-8');
    const buf = new Uint8Array(1 << 20);
    let rest = '';
    let line = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      rest += n > 0 ? decoder.decode(buf.subarray(0, n), { stream: true }) : decoder.decode();
      const parts = rest.split('\n');
      rest = n > 0 ? parts.pop()! : '';
      for (const p of parts) yield { line: ++line, text: p.endsWith('\r') ? p.slice(0, -1) : p };
      if (n === 0) return;
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Tokenized documents of a jsonl file, in file order; blank lines and empty texts are
 * skipped (counted in `skipped`). Throws, naming the file, when there are none.
 */
export function* jsonlDocuments(path: string, tok: WorldTokenizer, skipped = { count: 0 }): Generator<TokenizedDocument> {
  if (!existsSync(path)) throw new Error(`${path} not found: expected a jsonl file of training documents`);
  let produced = 0;
  for (const { line, text } of fileLines(path)) {
    const body = line === 1 ? text.replace(/^\uFEFF/, '') : text;
    if (body.trim() === '') continue;
    const where = `${path} line ${line}`;
    let record: unknown;
    try {
      record = JSON.parse(body);
    } catch (e) {
      throw new Error(`${where}: not valid JSON (${(e as Error).message})`, { cause: e });
    }
    const segments = recordSegments(record, where);
    if (segments === null) {
      skipped.count++;
      continue;
    }
    produced++;
    yield tokenizeSegments(segments, tok);
  }
  if (produced === 0) {
    throw new Error(`${path}: expected at least one document, found none (${skipped.count ? `${skipped.count} records with empty text` : 'no records'})`);
  }
}

/**
 * A jsonl file tokenized into memory, for per-document sampling straight from jsonl
 * (RWKV-PEFT --data_type jsonl): samples are truncated to ctx_len+1 tokens and padded
 * with 0 (padding takes no loss).
 */
export class JsonlDocuments implements DocumentSource {
  readonly documents: number;
  readonly skipped: number;

  private constructor(readonly name: string, private readonly docs: TokenizedDocument[], skipped: number) {
    this.documents = docs.length;
    this.skipped = skipped;
  }

  static load(path: string, tok: WorldTokenizer): JsonlDocuments {
    const skipped = { count: 0 };
    const docs = [...jsonlDocuments(path, tok, skipped)];
    return new JsonlDocuments(path, docs, skipped.count);
  }

  document(doc: number): TokenizedDocument {
    if (!Number.isInteger(doc) || doc < 0 || doc >= this.documents) {
      throw new Error(`${this.name}: document ${doc} does not exist (${this.documents} documents)`);
    }
    return this.docs[doc];
  }

  docSize(doc: number): number {
    return this.document(doc).tokens.length;
  }

  readWindow(doc: number, out: Int32Array): Uint8Array | null {
    const { tokens, mask } = this.document(doc);
    const n = Math.min(tokens.length, out.length);
    out.set(tokens.subarray(0, n));
    out.fill(0, n);
    return mask;
  }
}
