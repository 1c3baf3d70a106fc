import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dashPositionalsLast, parseCommandArgs, type Command } from '../../src/cli/command.ts';
import { keysRevokeCommand } from '../../src/cli/signing-keys-command.ts';

const kid = (first: string): string => `${first}${'x'.repeat(43 - first.length)}`;

describe('CLI positionals that start with "-"', () => {
  it('a kid starting with "-" is the kid, wherever it stands, also when it looks like -c or -h', () => {
    for (const k of [kid('-p'), kid('-c'), kid('-h'), kid('--'), kid('-_')]) {
      for (const argv of [
        [k, '--reason', 'key leaked'],
        ['--reason', 'key leaked', k],
        ['--json', k, '--reason=key leaked'],
        ['-c', 'stepgate.yaml', k, '--reason', 'key leaked'],
      ]) {
        const args = parseCommandArgs(keysRevokeCommand, argv);
        assert.deepEqual(args.positionals, [k], argv.join(' '));
        assert.equal(args.values.reason, 'key leaked');
        assert.equal(args.values.help, undefined);
      }
    }
  });

  it('an option value shaped like a kid stays the value (with "=", as parseArgs asks for a value starting with "-")', () => {
    const args = parseCommandArgs(keysRevokeCommand, [`--reason=${kid('-r')}`, kid('A')]);
    assert.equal(args.values.reason, kid('-r'));
    assert.deepEqual(args.positionals, [kid('A')]);
    const short = parseCommandArgs(keysRevokeCommand, [`-c${kid('-f')}`, kid('B'), '--reason', 'why']);
    assert.equal(short.values.config, kid('-f'));
    assert.deepEqual(short.positionals, [kid('B')]);
    // Without "=" it is still parseArgs' "ambiguous" refusal, never a silent swap.
    assert.throws(() => parseCommandArgs(keysRevokeCommand, ['--reason', kid('-r'), kid('A')]), { code: 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' });
  });

  it('only the whole shape counts: other dash arguments are still options, and unknown ones are refused', () => {
    assert.throws(() => parseCommandArgs(keysRevokeCommand, ['-p', '--reason', 'why']), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' });
    assert.throws(() => parseCommandArgs(keysRevokeCommand, [`${kid('-p')}y`, '--reason', 'why']), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' });
    assert.equal(parseCommandArgs(keysRevokeCommand, ['--help']).values.help, true);
  });

  it('keeps the order of positionals and what already follows "--"', () => {
    const opts = { reason: { type: 'string' as const } };
    assert.deepEqual(dashPositionalsLast(['a', kid('-q'), '--reason', 'r', 'b', '--', '-z'], opts, /[\w-]{43}/), ['--reason', 'r', '--', 'a', kid('-q'), 'b', '-z']);
    const untouched = ['a', '--reason', 'r'];
    assert.equal(dashPositionalsLast(untouched, opts, /[\w-]{43}/), untouched, 'nothing to move: argv as it is');
  });

  it('a command without a positional shape parses as before', () => {
    const plain: Command = { name: ['x'], summary: '', usage: '', options: {}, run: async () => 0 };
    assert.throws(() => parseCommandArgs(plain, [kid('-p')]), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' });
  });
});
