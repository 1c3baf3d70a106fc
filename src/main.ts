import { ConfigError, type Command, parseCommandArgs, UsageError } from './cli/command.ts';
import { commands } from './cli/commands.ts';

function helpText(): string {
  const width = Math.max(...commands.map((c) => c.name.join(' ').length));
  return [
    'Stepgate — multi-factor step-up gateway for payment systems.',
    '',
    'Usage: stepgate <command> [options]   (every command takes --help and --config FILE)',
    '',
    ...commands.map((c) => `  ${c.name.join(' ').padEnd(width)}  ${c.summary}`),
    '',
  ].join('\n');
}

function findCommand(argv: string[]): { command: Command; rest: string[] } | undefined {
  // Longest name first: `keys rotate-master` before `keys`.
  const sorted = [...commands].sort((a, b) => b.name.length - a.name.length);
  for (const command of sorted) {
    if (command.name.every((part, i) => argv[i] === part)) return { command, rest: argv.slice(command.name.length) };
  }
  return undefined;
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    process.stdout.write(helpText());
    return argv.length === 0 ? 2 : 0;
  }
  const found = findCommand(argv);
  if (found === undefined) {
    process.stderr.write(`stepgate: unknown command '${argv.join(' ')}'\n\n${helpText()}`);
    return 2;
  }
  const { command, rest } = found;
  try {
    const args = parseCommandArgs(command, rest);
    if (args.values.help === true) {
      process.stdout.write(`${command.summary}\n\nUsage: ${command.usage}\n`);
      return 0;
    }
    return await command.run(args);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`stepgate ${command.name.join(' ')}: ${(err as Error).message}\nUsage: ${command.usage}\n`);
      return 2;
    }
    throw err;
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
