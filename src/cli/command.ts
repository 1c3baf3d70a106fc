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
  const { values, positionals } = parseArgs({
    args: argv,
    options: { ...COMMON_OPTIONS, ...command.options },
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
