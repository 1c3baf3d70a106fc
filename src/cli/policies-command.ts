import { readFileSync } from 'node:fs';
import { isAppError } from '../errors/app-error.ts';
import { getCurrentPolicySet, getPolicySetVersion, policyErrorReason, policyFactorTypes, policySetHistory, savePolicySet } from '../flows/policies.ts';
import type { Gateway } from '../gateway.ts';
import { diffPolicySets, formatPolicyDiff, policySetDiffIsEmpty } from '../policy/diff-policy-sets.ts';
import { parsePolicyFile, serializePolicySet } from '../policy/policy-file.ts';
import { cliActor, openCliGateway } from './cli-support.ts';
import { type Command, type CommandArgs, stringOption, UsageError } from './command.ts';

/**
 * Policies as code: `stepgate policies apply FILE.yaml` validates a file with the same checks
 * as the admin API, prints the difference to the set in force and stores it as a new version
 * (`--dry-run` only prints); `export` prints a set as such a file; `history` lists versions.
 * Exit codes: 0 done (or nothing to do), 1 the file is invalid or the change was refused,
 * 2 wrong usage.
 */

/** Runs a command body with an open gateway; domain errors become readable lines and exit 1. */
async function withGateway(args: CommandArgs, body: (gw: Gateway) => Promise<number>): Promise<number> {
  const gw = await openCliGateway(args.config());
  try {
    return await body(gw);
  } catch (err) {
    if (!isAppError(err)) throw err;
    args.err(`stepgate: ${err.code}: ${err.detail ?? err.title}`);
    for (const p of err.invalidParams ?? []) args.err(`  ${p.pointer}: ${p.reason}`);
    return 1;
  } finally {
    await gw.close();
  }
}

/** A positive integer option (`--version 3`, `--limit 20`). */
function positiveIntOption(args: CommandArgs, name: string): number | undefined {
  const raw = stringOption(args, name);
  if (raw === undefined) return undefined;
  if (!/^\d{1,9}$/.test(raw) || Number(raw) < 1) throw new UsageError(`--${name} must be a positive integer`);
  return Number(raw);
}

export const policiesApplyCommand: Command = {
  name: ['policies', 'apply'],
  summary: 'Validate a policy file, print the difference to the current set and store it as a new version.',
  usage: [
    'stepgate policies apply FILE.yaml [--dry-run] [--comment TEXT] [--config FILE]',
    '',
    '  FILE.yaml       { policies: [...] } — the format of config/policies.demo.yaml and of',
    '                  `stepgate policies export`; it replaces the whole current set',
    '  --dry-run       validate and print the difference only; store nothing',
    '  --comment TEXT  why (kept with the version and in the audit log)',
    '',
    '  Problems are printed one per line as FILE:LINE: POINTER: CODE: reason (exit 1, nothing',
    '  stored). A file equal to the current set prints "no changes" and stores nothing. If',
    '  someone else stores a version between the printed difference and the save, the save',
    '  is refused (conflict) rather than applied against a set you did not see: run it again.',
  ].join('\n'),
  options: { 'dry-run': { type: 'boolean' }, comment: { type: 'string' } },
  positionals: 1,
  async run(args) {
    if (args.positionals.length !== 1) throw new UsageError('give exactly one policy file');
    const file = args.positionals[0] as string;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      args.err(`stepgate policies apply: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
      return 1;
    }
    const comment = stringOption(args, 'comment');
    return withGateway(args, async (gw) => {
      const parsed = parsePolicyFile(text, { factorTypes: policyFactorTypes(gw) });
      if (!parsed.ok) {
        for (const e of parsed.errors) {
          args.err(`${file}:${e.line ?? '?'}: ${e.pointer === '' ? '(document)' : e.pointer}: ${policyErrorReason(e)}`);
        }
        args.err(`stepgate policies apply: ${file} is invalid (${parsed.errors.length} problem${parsed.errors.length === 1 ? '' : 's'}); nothing stored.`);
        return 1;
      }
      const current = await getCurrentPolicySet(gw);
      const diff = diffPolicySets(current.policies, parsed.policies);
      if (policySetDiffIsEmpty(diff)) {
        args.out(`no changes (the current set, version ${current.version}, equals ${file})`);
        return 0;
      }
      args.out(`Changes to policy set version ${current.version}:`);
      args.out(formatPolicyDiff(diff).trimEnd());
      if (args.values['dry-run'] === true) {
        args.out('Dry run: nothing stored.');
        return 0;
      }
      const saved = await savePolicySet(gw, parsed.policies, {
        who: { actor: cliActor() },
        comment: comment ?? `stepgate policies apply ${file}`,
        baseVersion: current.version,
      });
      args.out(saved.changed ? `Stored as version ${saved.version}.` : `no changes (version ${saved.version})`);
      return 0;
    });
  },
};

export const policiesExportCommand: Command = {
  name: ['policies', 'export'],
  summary: 'Print the current (or a stored) policy set as a policy file.',
  usage: [
    'stepgate policies export [--version N] [--config FILE] > policies.yaml',
    '',
    '  --version N   an older version from `stepgate policies history` (default: the current one)',
    '',
    '  The output is canonical (sorted, defaults written out) and applies back as "no changes";',
    '  exporting an old version and applying it is how a change is rolled back.',
  ].join('\n'),
  options: { version: { type: 'string' } },
  async run(args) {
    if (args.positionals.length > 0) throw new UsageError(`unexpected argument ${args.positionals[0]}`);
    const version = positiveIntOption(args, 'version');
    return withGateway(args, async (gw) => {
      const set = version === undefined ? await getCurrentPolicySet(gw) : await getPolicySetVersion(gw, version);
      const by = set.createdAt === null ? '' : `, stored ${set.createdAt.toISOString()} by ${set.createdBy}`;
      args.out(`# Stepgate policy set version ${set.version}${by}`);
      args.out(serializePolicySet(set.policies).trimEnd());
      return 0;
    });
  },
};

export const policiesHistoryCommand: Command = {
  name: ['policies', 'history'],
  summary: 'List the stored policy set versions, newest first.',
  usage: ['stepgate policies history [--limit N] [--json] [--config FILE]', '', '  --limit N  how many (default 20)', '  --json     one JSON object {versions: [...]}'].join('\n'),
  options: { limit: { type: 'string' }, json: { type: 'boolean' } },
  async run(args) {
    if (args.positionals.length > 0) throw new UsageError(`unexpected argument ${args.positionals[0]}`);
    const limit = positiveIntOption(args, 'limit') ?? 20;
    return withGateway(args, async (gw) => {
      const { versions } = await policySetHistory(gw, { limit: Math.min(limit, 1000), offset: 0 });
      if (args.values.json === true) {
        args.out(JSON.stringify({ versions: versions.map((v) => ({ version: v.version, createdAt: v.createdAt.toISOString(), createdBy: v.createdBy, comment: v.comment })) }));
        return 0;
      }
      if (versions.length === 0) args.out('No policy set stored yet.');
      for (const v of versions) args.out(`v${v.version}  ${v.createdAt.toISOString()}  ${v.createdBy}  ${v.comment}`);
      return 0;
    });
  },
};

export const policiesCommands: Command[] = [policiesApplyCommand, policiesExportCommand, policiesHistoryCommand];
