/**
 * Command-line parsing with the rules of Go's `flag` package (what flanneld uses), plus the
 * GNU spellings overlayd always had:
 *   -flag / --flag               a boolean set to true
 *   -flag=VALUE / --flag=VALUE   any flag; a boolean takes 1 0 t f true false TRUE FALSE True False
 *                                (and yes/no/on/off)
 *   -flag VALUE / --flag VALUE   a non-boolean flag (the next argument is its value, even if it
 *                                starts with "-", as in Go)
 *   --                           ends the flags
 * A flag given twice keeps the last value, unless it is repeatable (every value, in order).
 * No positional arguments. Every mistake is a ConfigError with one line naming the flag.
 */
import { ConfigError } from './errors';
import { didYouMean } from './suggest';

export interface FlagShape {
  readonly type: 'string' | 'boolean';
  /** may be given several times; every value is kept, in order */
  readonly repeatable?: boolean;
  /** another name for the same flag (e.g. "h" for "help") */
  readonly alias?: string;
}

/** A flag overlayd knows but refuses, with the reason shown to the user. */
export interface RefusedFlag {
  readonly type: 'string' | 'boolean';
  readonly reason: string;
}

/** The flags given: strings as the list of values given (last one wins unless repeatable), booleans as true/false. */
export type GivenFlags = Map<string, string[] | boolean>;

const TRUE = /^(1|t|true|yes|on)$/i;
const FALSE = /^(0|f|false|no|off)$/i;

/** Parses a boolean the way Go's strconv.ParseBool does (plus yes/no/on/off); undefined if it is none. */
export function parseBoolText(text: string): boolean | undefined {
  const v = text.trim();
  if (TRUE.test(v)) return true;
  if (FALSE.test(v)) return false;
  return undefined;
}

/**
 * Parses argv against `flags` (name -> shape). `refused` names flags that exist elsewhere
 * (flanneld) but cannot apply: giving one is a ConfigError carrying its reason, except a
 * refused boolean given as false (it asks for nothing). `usage` ends each message.
 */
export function parseFlags(
  argv: readonly string[],
  flags: Readonly<Record<string, FlagShape>>,
  refused: Readonly<Record<string, RefusedFlag>> = {},
  usage = 'see overlayd --help',
): GivenFlags {
  const byName = new Map<string, string>();
  for (const [name, shape] of Object.entries(flags)) {
    byName.set(name, name);
    if (shape.alias !== undefined) byName.set(shape.alias, name);
  }
  const given: GivenFlags = new Map();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      if (i + 1 < argv.length) throw new ConfigError(`unexpected argument "${argv[i + 1]}" (${usage})`);
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      const prev = argv[i - 1];
      const prevName = prev?.replace(/^--?/, '');
      const hint = prevName !== undefined && flags[byName.get(prevName) ?? '']?.type === 'boolean' && parseBoolText(arg) !== undefined
        ? `; ${prev} is a boolean flag: write ${prev}=${arg}`
        : '';
      throw new ConfigError(`unexpected argument "${arg}"${hint} (${usage})`);
    }
    const body = arg.startsWith('--') ? arg.slice(2) : arg.slice(1);
    if (body === '' || body.startsWith('-') || body.startsWith('=')) throw new ConfigError(`bad flag syntax: ${arg} (${usage})`);
    const eq = body.indexOf('=');
    const rawName = eq < 0 ? body : body.slice(0, eq);
    const inline = eq < 0 ? undefined : body.slice(eq + 1);
    const name = byName.get(rawName);
    if (name === undefined) {
      const r = refused[rawName];
      if (r !== undefined) {
        if (r.type === 'boolean' && inline !== undefined && parseBoolText(inline) === false) continue;
        if (r.type === 'string' && inline === undefined) i++; // its value is not an argument of its own
        throw new ConfigError(`--${rawName} is not supported: ${r.reason}`);
      }
      const names = Object.keys(flags).filter((n) => n.length > 1).map((n) => `--${n}`);
      throw new ConfigError(`unknown flag --${rawName}${didYouMean(`--${rawName}`, names, false)} (${usage})`);
    }
    const shape = flags[name] as FlagShape;
    if (shape.type === 'boolean') {
      if (inline === undefined) {
        given.set(name, true);
      } else {
        const b = parseBoolText(inline);
        if (b === undefined) throw new ConfigError(`--${name}: "${inline}" is not a boolean (true/false)`);
        given.set(name, b);
      }
      continue;
    }
    let value = inline;
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new ConfigError(`--${name} needs a value (${usage})`);
      value = argv[++i] as string;
    }
    const before = given.get(name);
    given.set(name, shape.repeatable && Array.isArray(before) ? [...before, value] : [value]);
  }
  return given;
}
