/**
 * Decodes one Python string or bytes literal (`'…'`, `"…"`, `b'…'`, `u'…'`) to the bytes
 * it denotes: a str literal gives the UTF-8 of its code points (so `'\x80'` is C2 80), a
 * bytes literal gives its raw bytes (so `b'\x80'` is 80). This is how the RWKV World
 * vocabulary writes its tokens.
 */

const SIMPLE_ESCAPES: Record<string, number> = {
  '\\': 0x5c, "'": 0x27, '"': 0x22, a: 0x07, b: 0x08, f: 0x0c, n: 0x0a, r: 0x0d, t: 0x09, v: 0x0b,
};

const utf8 = new TextEncoder();

/** Throws naming `where` (e.g. "vocab.txt line 12") and what was wrong. */
export function decodePyLiteral(literal: string, where: string): Uint8Array {
  const fail = (what: string): never => {
    throw new Error(`${where}: invalid Python literal ${JSON.stringify(literal)}: ${what}`);
  };
  const isBytes = literal[0] === 'b' || literal[0] === 'B';
  const start = isBytes || literal[0] === 'u' || literal[0] === 'U' ? 1 : 0;
  const quote = literal[start];
  if ((quote !== "'" && quote !== '"') || literal.length < start + 2 || literal[literal.length - 1] !== quote) {
    fail(`expected a quoted str or b'…' bytes literal`);
  }
  const body = literal.slice(start + 1, -1);

  // Code points (str) or byte values (bytes), in order.
  const units: number[] = [];
  const hex = (from: number, n: number): number => {
    const digits = body.slice(from, from + n);
    if (digits.length !== n || !/^[0-9a-fA-F]+$/.test(digits)) fail(`\\${body[from - 1]} needs ${n} hex digits`);
    return parseInt(digits, 16);
  };
  for (let i = 0; i < body.length; ) {
    const c = body[i];
    if (c === quote) fail(`unescaped ${quote} inside the literal`);
    if (c !== '\\') {
      const cp = body.codePointAt(i)!;
      if (isBytes && cp > 0x7f) fail(`non-ASCII character in a bytes literal`);
      units.push(cp);
      i += cp > 0xffff ? 2 : 1;
      continue;
    }
    const e = body[i + 1];
    if (e === undefined) fail('trailing backslash');
    if (e in SIMPLE_ESCAPES) {
      units.push(SIMPLE_ESCAPES[e]);
      i += 2;
    } else if (e === 'x') {
      units.push(hex(i + 2, 2));
      i += 4;
    } else if (e >= '0' && e <= '7') {
      let n = 1;
      while (n < 3 && body[i + 1 + n] >= '0' && body[i + 1 + n] <= '7') n++;
      units.push(parseInt(body.slice(i + 1, i + 1 + n), 8));
      i += 1 + n;
    } else if (!isBytes && (e === 'u' || e === 'U')) {
      const n = e === 'u' ? 4 : 8;
      const cp = hex(i + 2, n);
      if (cp > 0x10ffff) fail(`code point ${cp.toString(16)} is beyond U+10FFFF`);
      units.push(cp);
      i += 2 + n;
    } else if (e === 'N' && !isBytes) {
      fail('\\N{…} escapes are not supported');
    } else {
      // Python keeps the backslash of an unknown escape.
      units.push(0x5c);
      i += 1;
    }
  }
  if (isBytes) {
    for (const u of units) if (u > 0xff) fail(`byte value ${u} is over 255`);
    return Uint8Array.from(units);
  }
  return utf8.encode(String.fromCodePoint(...units));
}
