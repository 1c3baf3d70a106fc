import { sql } from 'kysely';
import type { Clock } from '../clock.ts';
import type { Executor } from '../store/database.ts';
import { SEALED_COLUMNS } from '../store/sealed-columns.ts';
import { SealError, Sealer } from './sealer.ts';

/**
 * Proves the configured master key is the one the database's secrets are sealed under.
 * Without it a wrong key (an old one after `keys rotate-master`, a typo'd variable) starts
 * fine and fails later, request by request (the JWKS, every TOTP check). The proof is a known
 * value sealed in `master_key_check` (re-sealed by rotation like every sealed column).
 */
const CHECK_ID = 'master-key';
const CHECK_PLAINTEXT = 'stepgate master key check';

function aad(id: string): string {
  return `master_key_check.sealed:${id}`;
}

/** The configured key does not open what the database holds. */
export class MasterKeyMismatch extends Error {
  readonly code = 'master_key_mismatch';
  readonly sealedUnder: string | undefined;
  constructor(where: string, sealed: string, sealer: Sealer, cause: unknown) {
    const under = Sealer.keyIdOf(sealed);
    const which = under === undefined || under === sealer.currentKeyId ? 'fails to authenticate' : `is sealed under master key ${under}`;
    super(`${where} ${which}, but the configured master key is ${sealer.currentKeyId}`, { cause });
    this.name = 'MasterKeyMismatch';
    this.sealedUnder = under;
  }
}

function open(sealer: Sealer, where: string, sealed: string, associated: string): Buffer {
  try {
    return sealer.unseal(sealed, associated);
  } catch (err) {
    if (err instanceof SealError) throw new MasterKeyMismatch(where, sealed, sealer, err);
    throw err;
  }
}

async function readCheck(db: Executor): Promise<string | undefined> {
  const row = await db.selectFrom('master_key_check').select('sealed').where('id', '=', CHECK_ID).executeTakeFirst();
  return row?.sealed;
}

function openCheck(sealer: Sealer, sealed: string): void {
  const plaintext = open(sealer, 'the master-key check value', sealed, aad(CHECK_ID));
  if (plaintext.toString('utf8') !== CHECK_PLAINTEXT) throw new MasterKeyMismatch('the master-key check value', sealed, sealer, undefined);
}

/**
 * At start-up (after migrations): throws MasterKeyMismatch unless `sealer` opens the check
 * value. A database without one (fresh, or from before the check existed) first has one
 * value of every sealed column opened — so a wrong key cannot plant a check value of its
 * own over existing secrets — and then gets the check value.
 */
export async function assertMasterKeyOpensDatabase(db: Executor, sealer: Sealer, clock: Clock): Promise<void> {
  const existing = await readCheck(db);
  if (existing !== undefined) {
    openCheck(sealer, existing);
    return;
  }
  for (const column of SEALED_COLUMNS) {
    if (column.table === 'master_key_check') continue;
    const idRef = sql.ref(column.idColumn);
    const valueRef = sql.ref(column.column);
    const { rows } = await sql<{ id: string; sealed: string }>`
      select ${idRef} as id, ${valueRef} as sealed from ${sql.table(column.table)}
      where ${valueRef} is not null order by ${idRef} limit 1`.execute(db);
    const row = rows[0];
    if (row !== undefined) open(sealer, `${column.table}.${column.column} of row ${row.id}`, row.sealed, column.aad(row.id));
  }
  await db
    .insertInto('master_key_check')
    .values({ id: CHECK_ID, sealed: sealer.seal(CHECK_PLAINTEXT, aad(CHECK_ID)), created_at: clock.now().getTime() })
    .onConflict((oc) => oc.doNothing())
    .execute();
  // Another process may have inserted first (with another key): the stored value decides.
  openCheck(sealer, (await readCheck(db)) as string);
}

/** For /readyz: whether the running key still opens the check value (a rotation elsewhere may have replaced it). */
export async function masterKeyStillOpens(db: Executor, sealer: Sealer): Promise<boolean> {
  const sealed = await readCheck(db);
  if (sealed === undefined) return false;
  try {
    openCheck(sealer, sealed);
    return true;
  } catch (err) {
    if (err instanceof MasterKeyMismatch) return false;
    throw err;
  }
}
