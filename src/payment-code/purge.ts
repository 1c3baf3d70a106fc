import type { VerifierClock } from '../verifier/index.ts';
import type { PcDb } from './store/database.ts';

/**
 * Housekeeping: rows that can no longer decide anything are deleted after a day. Redemptions,
 * codes, seeds and the event chain are records and stay. Each statement is idempotent, so
 * several processes may run it at once.
 *
 * - `pc_stepups`: a step-up is useless once its record expired (its token could not verify).
 * - `pc_live_codes`: an expired value can be drawn again anyway; after a day an old code
 *   answers `code_unknown` instead of `code_expired`.
 * - `pc_offline_uses`: a time step more than one period old is refused by the window itself.
 */
export const PURGE_AFTER_SECONDS = 86_400;

export async function purgeExpired(db: PcDb, clock: VerifierClock): Promise<{ stepUps: number; liveCodes: number; offlineUses: number }> {
  const before = clock.now().getTime() - PURGE_AFTER_SECONDS * 1000;
  const stepUps = await db.deleteFrom('pc_stepups').where('expires_at', '<', before).executeTakeFirst();
  const liveCodes = await db.deleteFrom('pc_live_codes').where('expires_at', '<', before).executeTakeFirst();
  const offlineUses = await db.deleteFrom('pc_offline_uses').where('used_at', '<', before).executeTakeFirst();
  return { stepUps: Number(stepUps.numDeletedRows), liveCodes: Number(liveCodes.numDeletedRows), offlineUses: Number(offlineUses.numDeletedRows) };
}
