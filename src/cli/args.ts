/** Command-line parsing shared by the commands: typed options, --help, and usage errors (exit code 2). */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A mistake in how the command was called: the CLI prints it with the usage and exits with 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly usage = '',
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

type Options = NonNullable<ParseArgsConfig['options']>;

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** Parses argv strictly; undefined means --help was asked for (and printed). */
export function parseCommand(argv: string[], usage: string, options: Options, maxPositionals = 0): Parsed | undefined {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message, usage);
  }
  if (parsed.values.help) {
    process.stdout.write(usage);
    return undefined;
  }
  if (parsed.positionals.length > maxPositionals) throw new UsageError(`unexpected argument '${parsed.positionals[maxPositionals]}'`, usage);
  return { values: parsed.values as Parsed['values'], positionals: parsed.positionals };
}

export function requireString(p: Parsed, name: string, usage: string): string {
  const v = p.values[name];
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required`, usage);
  return v;
}

/** A numeric option (or its default), checked to be finite and within [min, max]. */
export function numberOption(p: Parsed, name: string, usage: string, def: number, o: { min?: number; max?: number; integer?: boolean } = {}): number {
  const raw = p.values[name];
  if (raw === undefined) return def;
  const v = Number(raw);
  const ok = typeof raw === 'string' && raw.trim() !== '' && Number.isFinite(v) && (!o.integer || Number.isInteger(v)) && (o.min === undefined || v >= o.min) && (o.max === undefined || v <= o.max);
  if (!ok) {
    const range = [o.min !== undefined ? `>= ${o.min}` : '', o.max !== undefined ? `<= ${o.max}` : ''].filter(Boolean).join(' and ');
    throw new UsageError(`--${name}: expected ${o.integer ? 'an integer' : 'a number'}${range ? ` ${range}` : ''}, found ${JSON.stringify(raw)}`, usage);
  }
  return v;
}
