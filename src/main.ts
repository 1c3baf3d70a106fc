import { ConfigError, type Command, parseCommandArgs, UsageError } from './cli/command.ts';
import { commands } from './cli/commands.ts';
import { describeError, isOperationalError } from './errors/startup-error.ts';

/**
 * Exit statuses: 0 success; 1 the command failed (a refused input, a broken audit chain, an
 * unreachable database, a port in use — one line on stderr); 2 usage or configuration error
 * (one line naming the option or the key), also for a master key that does not open the
 * database's sealed values.
 */

function listing(list: readonly Command[]): string[] {
  const width = Math.max(...list.map((c) => c.name.join(' ').length));
  return list.map((c) => `  ${c.name.join(' ').padEnd(width)}  ${c.summary}`);
}

function helpText(): string {
  return [
    'Stepgate — multi-factor step-up gateway for payment systems.',
    '',
    'Usage: stepgate <command> [options]   (every command takes --help and --config FILE)',
    '',
    ...listing(commands),
    '',
  ].join('\n');
}

/** Commands whose names extend `prefix` (`keys`, `payment-code api-keys`…): `stepgate keys --help` lists them. */
function groupOf(prefix: string[]): Command[] {
  if (prefix.length === 0) return [];
  return commands.filter((c) => c.name.length > prefix.length && prefix.every((p, i) => c.name[i] === p));
}

/** The longest leading words of argv that name a group, if any. */
function findGroup(words: string[]): { prefix: string[]; group: Command[] } | undefined {
  for (let n = words.length; n >= 1; n -= 1) {
    const prefix = words.slice(0, n);
    const group = groupOf(prefix);
    if (group.length > 0) return { prefix, group };
  }
  return undefined;
}

function groupHelp(prefix: string[], group: Command[]): string {
  return [`Usage: stepgate ${prefix.join(' ')} <command> [options]   (each takes --help and --config FILE)`, '', ...listing(group), ''].join('\n');
}

function findCommand(argv: string[]): { command: Command; rest: string[] } | undefined {
  // Longest name first: `keys rotate-master` before `keys`.
  const sorted = [...commands].sort((a, b) => b.name.length - a.name.length);
  for (const command of sorted) {
    if (command.name.every((part, i) => argv[i] === part)) return { command, rest: argv.slice(command.name.length) };
  }
  return undefined;
}

const HELP = new Set(['--help', '-h', 'help']);

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || HELP.has(argv[0] as string)) {
    process.stdout.write(helpText());
    return argv.length === 0 ? 2 : 0;
  }
  const found = findCommand(argv);
  if (found === undefined) {
    const asked = argv.length >= 2 && HELP.has(argv.at(-1) as string);
    const words = asked ? argv.slice(0, -1) : argv;
    const found = findGroup(words);
    if (found !== undefined) {
      if (asked && found.prefix.length === words.length) {
        process.stdout.write(groupHelp(found.prefix, found.group));
        return 0;
      }
      const what = found.prefix.length === argv.length ? `'${argv.join(' ')}' needs a command` : `unknown command '${argv.join(' ')}'`;
      process.stderr.write(`stepgate: ${what}\n\n${groupHelp(found.prefix, found.group)}`);
      return 2;
    }
    process.stderr.write(`stepgate: unknown command '${argv.join(' ')}'\n\n${helpText()}`);
    return 2;
  }
  const { command, rest } = found;
  const name = command.name.join(' ');
  try {
    const args = parseCommandArgs(command, rest);
    if (args.values.help === true) {
      process.stdout.write(`${command.summary}\n\nUsage: ${command.usage}\n`);
      return 0;
    }
    const allowed = command.positionals ?? 0;
    if (args.positionals.length > allowed) throw new UsageError(`unexpected argument '${args.positionals[allowed] as string}'`);
    return await command.run(args);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`stepgate ${name}: ${(err as Error).message}\nUsage: ${command.usage}\n`);
      return 2;
    }
    // The environment's fault (port taken, database down, disk not writable): one line.
    if (isOperationalError(err)) {
      process.stderr.write(`stepgate ${name}: ${describeError(err)}\n`);
      return 1;
    }
    throw err;
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
