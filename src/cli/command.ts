import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { ConfigError, loadConfig } from '../config/load-config.ts';
import type { Config } from '../config/schema.ts';

/** A CLI command: `stepgate <name…> [options]`. Every command answers --help. */
export interface Command {
  /** e.g. `['keys', 'rotate-master']` */
  name: string[];
  summary: string;
  usage: string;
  options: ParseArgsOptionsConfig;
  /** How many positional arguments it takes at most (default none: a stray one is exit 2). */
  positionals?: number;
  /**
   * Positionals of this shape are positionals even when they start with "-" (a JWK
   * thumbprint kid is base64url and starts with "-" one time in 64): without this,
   * `stepgate keys revoke -pXz…` would be read as options. Must match the whole argument.
   */
  positionalPattern?: RegExp;
  run(args: CommandArgs): Promise<number>;
}

export interface CommandArgs {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
  /** Loads the configuration (default.yaml, --config FILE, STEPGATE_* env). */
  config(): Config;
  out(line: string): void;
  err(line: string): void;
}

/** Options every command takes. */
export const COMMON_OPTIONS: ParseArgsOptionsConfig = {
  config: { type: 'string', short: 'c' },
  help: { type: 'boolean', short: 'h' },
};

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function parseCommandArgs(command: Command, argv: string[]): CommandArgs {
  const options = { ...COMMON_OPTIONS, ...command.options };
  const { values, positionals } = parseArgs({
    args: command.positionalPattern === undefined ? argv : dashPositionalsLast(argv, options, command.positionalPattern),
    options,
    allowPositionals: true,
    strict: true,
  });
  const file = typeof values.config === 'string' ? values.config : undefined;
  return {
    values,
    positionals,
    config: () => loadConfig({ file }),
    out: (line) => {
      process.stdout.write(`${line}\n`);
    },
    err: (line) => {
      process.stderr.write(`${line}\n`);
    },
  };
}

/**
 * When an argument that is not an option's value starts with "-" and has the command's
 * positional shape, moves it and every other positional (in order) after a "--", where
 * parseArgs takes them as positionals. Otherwise returns argv as it is.
 */
export function dashPositionalsLast(argv: string[], options: ParseArgsOptionsConfig, pattern: RegExp): string[] {
  const takesValue = (arg: string): boolean => {
    if (arg.startsWith('--')) {
      if (arg.includes('=')) return false;
      return options[arg.slice(2)]?.type === 'string';
    }
    // "-c" takes the next argument; "-cFILE" carries its value.
    if (arg.length !== 2) return false;
    return Object.values(options).some((o) => o.short === arg[1] && o.type === 'string');
  };
  const end = argv.indexOf('--');
  const head = end === -1 ? argv : argv.slice(0, end);
  const tail = end === -1 ? [] : argv.slice(end + 1);
  const rest: string[] = [];
  const moved: string[] = [];
  let dashPositional = false;
  const whole = new RegExp(`^(?:${pattern.source})$`, pattern.flags.replace(/[gy]/g, ''));
  for (let i = 0; i < head.length; i++) {
    const arg = head[i] as string;
    if (arg.startsWith('-') && arg !== '-' && whole.test(arg)) {
      moved.push(arg);
      dashPositional = true;
    } else if (!arg.startsWith('-') || arg === '-') {
      moved.push(arg);
    } else {
      rest.push(arg);
      if (takesValue(arg) && i + 1 < head.length) rest.push(head[++i] as string);
    }
  }
  return dashPositional ? [...rest, '--', ...moved, ...tail] : argv;
}

/** A string option's value, or undefined. */
export function stringOption(args: CommandArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function requireStringOption(args: CommandArgs, name: string): string {
  const v = stringOption(args, name);
  if (v === undefined || v === '') throw new UsageError(`--${name} is required`);
  return v;
}

export { ConfigError };
