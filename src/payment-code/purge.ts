import { sql } from 'kysely';
import type { VerifierClock } from '../verifier/index.ts';
import type { PcDb } from './store/database.ts';
import { REPLAY_TABLE } from './store/replay-store.ts';

/**
 * Housekeeping: rows that can no longer decide anything are deleted after a day. Redemptions,
 * codes, seeds and the event chain are records and stay. Each statement is idempotent, so
 * several processes may run it at once.
 *
 * - `pc_stepups`: a step-up is useless once its record expired (its token could not verify).
 * - `pc_live_codes`: an expired value can be drawn again anyway; after a day an old code
 *   answers `code_unknown` instead of `code_expired`.
 * - `pc_offline_uses`: a time step more than one period old is refused by the window itself.
 * - `pc_stepup_replay`: a `jti` past its token's expiry is refused as expired anyway.
 */
export const PURGE_AFTER_SECONDS = 86_400;

export async function purgeExpired(db: PcDb, clock: VerifierClock): Promise<{ stepUps: number; liveCodes: number; offlineUses: number; jtis: number }> {
  const before = clock.now().getTime() - PURGE_AFTER_SECONDS * 1000;
  const stepUps = await db.deleteFrom('pc_stepups').where('expires_at', '<', before).executeTakeFirst();
  const liveCodes = await db.deleteFrom('pc_live_codes').where('expires_at', '<', before).executeTakeFirst();
  const offlineUses = await db.deleteFrom('pc_offline_uses').where('used_at', '<', before).executeTakeFirst();
  const jtis = await sql`delete from ${sql.table(REPLAY_TABLE)} where expires_at < ${before}`.execute(db);
  return { stepUps: Number(stepUps.numDeletedRows), liveCodes: Number(liveCodes.numDeletedRows), offlineUses: Number(offlineUses.numDeletedRows), jtis: Number(jtis.numAffectedRows ?? 0n) };
}
