import { userInfo } from 'node:os';
import { pino } from 'pino';
import type { Config } from '../config/schema.ts';
import { createGateway, type Gateway } from '../gateway.ts';
import { createLogger, type Logger } from '../logger.ts';
import { type CommandArgs, stringOption, UsageError } from './command.ts';

/** Who ran an operator command, for the audit log: the OS account, not a gateway user. */
export function cliActor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}

/** Operator commands keep stdout for their result; log lines (warnings) go to stderr. */
export function cliLogger(config: Config): Logger {
  const level = config.log.level === 'info' || config.log.level === 'debug' || config.log.level === 'trace' ? 'warn' : config.log.level;
  return createLogger(level, pino.destination({ dest: 2, sync: true }));
}

export async function openCliGateway(config: Config): Promise<Gateway> {
  return createGateway(config, { logger: cliLogger(config) });
}

/** Comma-separated list option → trimmed non-empty items (`--roles admin,helpdesk`). */
export function listOption(args: CommandArgs, name: string): string[] | undefined {
  const raw = stringOption(args, name);
  if (raw === undefined) return undefined;
  const items = raw.split(',').map((s) => s.trim());
  if (items.some((s) => s === '')) throw new UsageError(`--${name} must be a comma-separated list without empty items`);
  return [...new Set(items)];
}

/** Reads a secret from the environment variable an option names (`--password-env VAR`). */
export function secretFromEnv(args: CommandArgs, option: string): string | undefined {
  const name = stringOption(args, option);
  if (name === undefined) return undefined;
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new UsageError(`--${option} takes the NAME of an environment variable`);
  const value = process.env[name];
  if (value === undefined || value === '') throw new UsageError(`environment variable ${name} (from --${option}) is not set`);
  return value;
}

/** Prompts on the terminal without echo. Only on a TTY: a password is never read from a pipe by accident. */
export function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY || !process.stderr.isTTY) {
    return Promise.reject(new UsageError('no terminal to prompt for the password on: pass --password-env VAR'));
  }
  return new Promise((resolve, reject) => {
    process.stderr.write(prompt);
    let value = '';
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    const done = (err?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (err === undefined) resolve(value);
      else reject(err);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return done();
        if (ch === '\u0003') return done(new UsageError('cancelled'));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on('data', onData);
  });
}

/**
 * The new password for a user: from `--password-env VAR`, else prompted twice on a TTY.
 * There is deliberately no option taking the password itself: argv leaks into shell history
 * and into `ps` output for every local user.
 */
export async function readNewPassword(args: CommandArgs): Promise<string> {
  if (args.values.password !== undefined) {
    throw new UsageError('refusing to read a password from the command line (shell history, ps); use --password-env VAR or the prompt');
  }
  const fromEnv = secretFromEnv(args, 'password-env');
  if (fromEnv !== undefined) return fromEnv;
  const first = await promptHidden('New password: ');
  const second = await promptHidden('Repeat it: ');
  if (first !== second) throw new UsageError('the passwords do not match');
  return first;
}
