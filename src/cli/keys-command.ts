import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { AuditLog } from '../audit/audit-log.ts';
import { systemClock } from '../clock.ts';
import { loadMasterKey } from '../crypto/master-key.ts';
import { RotationError, rotateMasterKey } from '../crypto/rotate-master.ts';
import { type MasterKey, masterKeyFromBytes } from '../crypto/sealer.ts';
import { openConfiguredStore } from '../gateway.ts';
import { cliActor, secretFromEnv } from './cli-support.ts';
import { type Command, UsageError } from './command.ts';

function parseKey(base64: string, where: string): MasterKey {
  const trimmed = base64.trim();
  const bytes = Buffer.from(trimmed, 'base64');
  if (bytes.length !== 32 || bytes.toString('base64') !== trimmed) throw new UsageError(`${where} must be the base64 of exactly 32 bytes`);
  return masterKeyFromBytes(bytes);
}

/** Writes a key file durably with mode 0600; `wx` refuses to overwrite. */
function writeKeyFile(file: string, base64: string, flag: 'wx' | 'w'): void {
  const fd = openSync(file, flag, 0o600);
  try {
    writeSync(fd, `${base64}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * The development key file is replaced only after the database commit. The new key is
 * written to `master.key.next` BEFORE the re-sealing transaction, so a crash between the
 * commit and the rename leaves the key on disk; a later run finds it and resumes with it.
 */
interface FilePlan {
  file: string;
  next: string;
  newKey: MasterKey;
  resumed: boolean;
}

function planFileRotation(file: string): FilePlan {
  const next = `${file}.next`;
  if (existsSync(next)) {
    return { file, next, newKey: parseKey(readFileSync(next, 'utf8'), next), resumed: true };
  }
  const bytes = randomBytes(32);
  writeKeyFile(next, bytes.toString('base64'), 'wx');
  return { file, next, newKey: masterKeyFromBytes(bytes), resumed: false };
}

function finishFileRotation(plan: FilePlan): void {
  const previous = `${plan.file}.previous`;
  const tmp = `${previous}.tmp`;
  writeKeyFile(tmp, readFileSync(plan.file, 'utf8').trim(), 'w');
  renameSync(tmp, previous);
  // rename(2) is atomic and keeps the 0600 mode the .next file was created with.
  renameSync(plan.next, plan.file);
}

export const keysRotateMasterCommand: Command = {
  name: ['keys', 'rotate-master'],
  summary: 'Re-seal every sealed secret under a new master key, in one transaction.',
  usage: [
    'stepgate keys rotate-master --new-key-env VAR [--config FILE]',
    '       stepgate keys rotate-master            (development key file only)',
    '',
    '  --new-key-env VAR  name of the environment variable holding the new key',
    '                     (base64 of 32 bytes: openssl rand -base64 32). Afterwards set',
    '                     STEPGATE_MASTER_KEY to it and restart every gateway process.',
    '  Without --new-key-env, a development key in <dataDir>/master.key is replaced by a',
    '  fresh one (the old one is kept as master.key.previous).',
    '  Nothing changes if any sealed value fails to unseal under the current key.',
  ].join('\n'),
  options: {
    'new-key-env': { type: 'string' },
  },
  async run(args) {
    const config = args.config();
    const fromEnv = secretFromEnv(args, 'new-key-env');
    const current = loadMasterKey(config.secrets.masterKey, config.dataDir, config.mode);
    let newKey: MasterKey;
    let plan: FilePlan | undefined;
    if (fromEnv !== undefined) {
      newKey = parseKey(fromEnv, `the key in ${String(args.values['new-key-env'])}`);
      if (newKey.id === current.key.id) throw new UsageError('the new key is the current master key');
    } else {
      if (current.origin === 'config' || current.file === undefined) {
        throw new UsageError('--new-key-env VAR is required when the master key comes from STEPGATE_MASTER_KEY');
      }
      plan = planFileRotation(current.file);
      newKey = plan.newKey;
      if (plan.resumed) args.err(`found ${plan.next} from an interrupted rotation: finishing it with that key`);
    }

    const store = await openConfiguredStore(config);
    let result: Awaited<ReturnType<typeof rotateMasterKey>>;
    try {
      await store.migrate();
      result = await rotateMasterKey({
        store,
        audit: new AuditLog(store.dialect, systemClock),
        currentKey: current.key,
        newKey,
        actor: cliActor(),
      });
    } catch (err) {
      if (err instanceof RotationError) {
        // The transaction rolled back: every value is still under the current key. On any
        // other error the commit's fate is unknown, so master.key.next stays for a re-run.
        if (plan !== undefined && !plan.resumed) unlinkSync(plan.next);
        args.err(`stepgate keys rotate-master: ${err.message}; nothing was changed`);
        return 1;
      }
      throw err;
    } finally {
      await store.close();
    }
    // Committed: from here on the new key must never be lost (the .next file holds it).
    if (plan !== undefined) finishFileRotation(plan);
    args.out(`re-sealed ${result.resealed} value(s) under master key ${result.toKeyId} (was ${result.fromKeyId})`);
    if (plan === undefined) {
      args.out('Now set STEPGATE_MASTER_KEY to the new key and restart every gateway process.');
    } else {
      args.out(`${plan.file} now holds the new key; the old one is in ${plan.file}.previous. Restart the gateway.`);
    }
    return 0;
  },
};
