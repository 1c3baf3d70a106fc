import { ASSERTION_JTI_PRUNE_GRACE_SECONDS } from './clients.ts';
import { forgetStaleDevices } from './known-devices.ts';
import type { Gateway } from '../gateway.ts';

/**
 * Housekeeping every gateway process runs on a timer (config `maintenance.intervalSeconds`).
 * Each step is a set of conditional writes, so several processes running it at once do the
 * work once: a step-up is marked expired — and `stepup.expired` audited — by exactly one.
 */

const BATCH = 200;

/** Marks pending/completed step-ups past their expiry as expired, one audited event each. */
export async function expireStaleStepUps(gw: Gateway): Promise<number> {
  const nowMs = gw.clock.now().getTime();
  let expired = 0;
  for (;;) {
    const stale = await gw.store.db
      .selectFrom('stepups')
      .select(['id', 'client_id', 'user_id', 'status'])
      .where('status', 'in', ['pending', 'completed'])
      .where('expires_at', '<=', nowMs)
      .orderBy('expires_at')
      .limit(BATCH)
      .execute();
    for (const s of stale) {
      const moved = await gw.store.db.transaction().execute(async (tx) => {
        const row = await tx.updateTable('stepups').set({ status: 'expired' }).where('id', '=', s.id).where('status', 'in', ['pending', 'completed']).returning('id').executeTakeFirst();
        if (row === undefined) return false;
        await gw.audit.append(tx, { type: 'stepup.expired', actor: null, subject: s.user_id, data: { stepupId: s.id, clientId: s.client_id, was: s.status } });
        return true;
      });
      if (moved) {
        expired += 1;
        gw.metrics.stepups.inc({ event: 'expired' });
      }
    }
    if (stale.length < BATCH) return expired;
  }
}

/** Deletes single-use records nobody can use any more (their replay protection has expired with them). */
export async function purgeExpiredRecords(gw: Gateway): Promise<void> {
  const nowMs = gw.clock.now().getTime();
  const db = gw.store.db;
  // Kept past their expiry by the grace: another process's clock may run behind this one's.
  await db.deleteFrom('client_assertion_jtis').where('expires_at', '<', nowMs - ASSERTION_JTI_PRUNE_GRACE_SECONDS * 1000).execute();
  await db.deleteFrom('one_time_tokens').where('expires_at', '<', nowMs - 86_400_000).execute();
  await db.deleteFrom('sessions').where('expires_at', '<', nowMs).execute();
  await db.deleteFrom('rate_limits').where('expires_at', '<', nowMs).execute();
  // Sign-in throttle rows (one per login name tried, known or not, and per passkey) that hold
  // no lock in force and saw no failure for login.lockSeconds: their count is forgotten. The
  // limit stays login.maxFailures failures per lockSeconds (a count that waited that long
  // could only have locked for that long), and names a scanner made up do not pile up.
  await db
    .deleteFrom('login_throttle')
    .where('last_failed_at', '<=', nowMs - gw.config.login.lockSeconds * 1000)
    .where((eb) => eb.or([eb('locked_until', 'is', null), eb('locked_until', '<=', nowMs)]))
    .execute();
}

export async function runMaintenance(gw: Gateway): Promise<void> {
  await expireStaleStepUps(gw);
  await purgeExpiredRecords(gw);
  await forgetStaleDevices(gw);
}

/** Starts the timer; the returned function stops it. Errors are logged, never thrown. */
export function startMaintenance(gw: Gateway, intervalSeconds: number): () => void {
  let running = false;
  const tick = () => {
    if (running) return;
    running = true;
    runMaintenance(gw)
      .catch((err: unknown) => gw.logger.error({ err }, 'maintenance failed'))
      .finally(() => {
        running = false;
      });
  };
  const timer = setInterval(tick, intervalSeconds * 1000);
  timer.unref();
  return () => clearInterval(timer);
}
