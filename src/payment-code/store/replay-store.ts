import type { DatabaseSync } from 'node:sqlite';
import { sql } from 'kysely';
import type { ReplayStore, VerifierClock } from '../../verifier/index.ts';
import type { PcDb, PcExecutor } from './database.ts';

/** The table of the `jti`s P has accepted (the verifier stores' layout: jti, expires_at). */
export const REPLAY_TABLE = 'pc_stepup_replay';

/** Whether this `jti` was accepted already (a read: the insert below is what decides). */
export async function jtiRecorded(db: PcExecutor, jti: string): Promise<boolean> {
  const r = await sql<{ one: number }>`select 1 as one from ${sql.table(REPLAY_TABLE)} where jti = ${jti}`.execute(db);
  return r.rows.length > 0;
}

/**
 * Records `jti` as used, in the caller's transaction: false when it already was (another
 * transaction that recorded it committed first; on PostgreSQL a concurrent one is waited for).
 */
export async function recordJti(tx: PcExecutor, jti: string, expiresAt: Date): Promise<boolean> {
  const r = await sql`insert into ${sql.table(REPLAY_TABLE)} (jti, expires_at) values (${jti}, ${expiresAt.getTime()}) on conflict (jti) do nothing`.execute(tx);
  return Number(r.numAffectedRows ?? 0n) === 1;
}

/**
 * P's replay store on SQLite: the verifier's table (`SqliteReplayStore`'s layout), written
 * through P's own connection, so a consume is durable like every other write of P
 * (sqlite-dialect.ts): it is answered only after the WAL sync that covers its commit, and a
 * failed sync refuses it (the verifier then fails closed). Exactly-once is the insert's: one
 * autocommitted `INSERT … ON CONFLICT DO NOTHING`, and SQLite runs one write at a time (across
 * processes too: its write lock).
 */
/** Expired rows are deleted at most this often (the verifier's stores do the same). */
const PRUNE_INTERVAL_SECONDS = 60;

export class PcSqliteReplayStore implements ReplayStore {
  readonly #db: PcDb;
  readonly #clock: VerifierClock;
  readonly #table: string;
  #nextPruneAt = 0;

  constructor(db: PcDb, raw: DatabaseSync, table: string, clock: VerifierClock) {
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(table)) throw new TypeError('invalid replay table name');
    this.#db = db;
    this.#clock = clock;
    this.#table = table;
    raw.exec(
      `CREATE TABLE IF NOT EXISTS ${table} (jti TEXT PRIMARY KEY NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
       CREATE INDEX IF NOT EXISTS ${table}_expires_at ON ${table} (expires_at);`,
    );
  }

  async consume(jti: string, expiresAt: Date): Promise<boolean> {
    if (typeof jti !== 'string' || jti.length === 0) throw new TypeError('jti must be a non-empty string');
    if (!(expiresAt instanceof Date) || Number.isNaN(expiresAt.getTime())) throw new TypeError('expiresAt must be a valid Date');
    this.#pruneIfDue();
    const r = await sql`insert into ${sql.table(this.#table)} (jti, expires_at) values (${jti}, ${expiresAt.getTime()}) on conflict (jti) do nothing`.execute(this.#db);
    return Number(r.numAffectedRows ?? 0n) === 1;
  }

  #pruneIfDue(): void {
    const now = this.#clock.now().getTime();
    if (now < this.#nextPruneAt) return;
    this.#nextPruneAt = now + PRUNE_INTERVAL_SECONDS * 1000;
    // Housekeeping: a failure here must not turn into a refused token.
    sql`delete from ${sql.table(this.#table)} where expires_at <= ${now}`.execute(this.#db).catch(() => {});
  }
}
