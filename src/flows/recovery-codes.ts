import type { Gateway } from '../gateway.ts';
import { sql } from 'kysely';
import { newId } from '../crypto/ids.ts';
import { generateRecoveryCodes } from '../factors/recovery-code/index.ts';
import type { AuditActor } from './users.ts';

/**
 * Recovery codes: one set per user, one row (a unique index on user and type). Generating a
 * set is ONE upsert: the first time it inserts the row, afterwards it overwrites the hashes
 * and moves `counter` (the set's version) forward. A verification still in flight against
 * the old set asks to write `counter = old + 1`, which the guard `counter < :next` then
 * refuses, so no old code works once the new set exists. Two generations at once (two
 * processes) simply follow each other: the later one is the set in force.
 */

export const RECOVERY_CODES_LABEL = 'Recovery codes';

export interface GeneratedRecoveryCodes {
  factorId: string;
  /** Shown once; only salted hashes are stored. */
  codes: string[];
  createdAt: Date;
  /** Whether an older set was replaced (and stopped working). */
  replaced: boolean;
}

export async function generateRecoveryCodeSet(gw: Gateway, userId: string, who: AuditActor): Promise<GeneratedRecoveryCodes> {
  const set = generateRecoveryCodes(gw.config.recoveryCodes.count);
  const now = gw.clock.now();
  const nowMs = now.getTime();
  const params = JSON.stringify({ total: set.codes.length, remaining: set.codes.length });
  return gw.store.db.transaction().execute(async (tx) => {
    const row = await tx
      .insertInto('factors')
      .values({
        id: newId('fac'),
        user_id: userId,
        type: 'recovery_code',
        label: RECOVERY_CODES_LABEL,
        status: 'active',
        secret_hash: set.stored,
        secret_sealed: null,
        params,
        counter: 0,
        failures: 0,
        locked_until: null,
        created_at: nowMs,
        updated_at: nowMs,
        last_used_at: null,
      })
      .onConflict((oc) =>
        oc
          .columns(['user_id', 'type'])
          // The partial unique index's predicate, literally, so PostgreSQL can infer the index.
          .where(sql<boolean>`type = 'recovery_code'`)
          .doUpdateSet((eb) => ({
            secret_hash: set.stored,
            params,
            status: 'active',
            counter: eb('factors.counter', '+', 1),
            failures: 0,
            locked_until: null,
            created_at: nowMs,
            updated_at: nowMs,
            last_used_at: null,
          })),
      )
      .returning(['id', 'counter'])
      .executeTakeFirstOrThrow();
    // counter 0: just inserted; above 0: an existing set was overwritten.
    const replaced = row.counter > 0;
    await gw.audit.append(tx, {
      type: replaced ? 'factor.regenerated' : 'factor.enrolled',
      actor: who.actor,
      subject: userId,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      data: { factorId: row.id, factorType: 'recovery_code', count: set.codes.length },
    });
    return { factorId: row.id, codes: set.codes, createdAt: now, replaced };
  });
}
