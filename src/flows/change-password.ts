import { AppError } from '../errors/app-error.ts';
import type { Gateway } from '../gateway.ts';
import * as sessionsRepo from '../store/sessions-repository.ts';
import * as repo from '../store/users-repository.ts';
import { createSessionIn, type NewSession, type SessionDevice } from './sessions.ts';
import { normalisePassword } from '../factors/password/policy.ts';
import { type AuditActor, loginThrottleKey, passwordServices } from './users.ts';

/**
 * A signed-in user changes their own password (ASVS 5.0 V6.2.2, V6.2.3): the current
 * password and the new one. The order is the security argument, as for sign-in:
 *
 *  1. the new password against the policy first — it is the user's own input, no secret
 *     is compared, so a refusal charges and writes nothing;
 *  2. an argon2 slot without waiting (503 `overloaded` otherwise, nothing written);
 *  3. the attempt charged to the login name's throttle row *before* the current password is
 *     compared, so this form is no way around the sign-in lockout: a locked name is refused
 *     uncompared, and the last allowed failure locks it for sign-in too;
 *  4. success: the new hash replaces exactly the hash that was verified (a concurrent change
 *     loses with 409 instead of being overwritten), every session of the user ends (ASVS
 *     V7.4.3 — a thief's session among them), the throttle is cleared, and this browser
 *     gets a new session, all in one transaction with the audit event.
 */

export interface ChangePasswordInput {
  currentPassword: string;
  newPassword: string;
}

export async function changeOwnPassword(gw: Gateway, userId: string, input: ChangePasswordInput, who: AuditActor, device?: SessionDevice): Promise<NewSession> {
  const db = gw.store.db;
  const user = await repo.findUserById(db, userId);
  if (user === undefined || user.status !== 'active') throw new AppError('unauthorized');
  const { factor, hasher, policy } = passwordServices(gw);
  const violation = policy.check(input.newPassword, user.username);
  if (violation !== undefined) {
    throw new AppError('password_policy', { detail: `The new password ${violation.message}.`, invalidParams: [{ pointer: '/new_password', reason: violation.message }] });
  }
  const { maxFailures, lockSeconds } = gw.config.login;
  const key = loginThrottleKey(gw, user.username);
  const now = gw.clock.now();
  const nowMs = now.getTime();
  const base = { actor: userId, subject: userId, ip: who.ip ?? null, requestId: who.requestId ?? null };

  const checked = await hasher.admit(async () => {
    const charge = await repo.chargeLoginAttempt(db, key, { nowMs, maxFailures, lockUntilMs: nowMs + lockSeconds * 1000 });
    if (charge === undefined) return { locked: true as const };
    const found = await repo.findUserWithPassword(db, user.username);
    const stored = found?.factor;
    const outcome = await factor.verify(
      stored === undefined ? undefined : { id: stored.id, userId, type: 'password', label: '', status: stored.status, secretHash: stored.secret_hash, secretSealed: null, params: {}, counter: Number(stored.counter) },
      { password: input.currentPassword },
      { now },
    );
    if (!outcome.ok || stored === undefined || stored.secret_hash === null) return { locked: false as const, ok: false as const, charge };
    // Hashed with the slot this section holds.
    const phc = await hasher.hash(normalisePassword(input.newPassword));
    return { locked: false as const, ok: true as const, charge, factorId: stored.id, verifiedPhc: stored.secret_hash, phc };
  });

  if (checked.locked) {
    await gw.audit.append(db, { ...base, type: 'user.password_change_failed', data: { reason: 'locked' } });
    throw new AppError('too_many_requests', { detail: 'Too many failed attempts for this username. Try again later.', retryAfterSeconds: lockSeconds });
  }
  if (!checked.ok) {
    await db.transaction().execute(async (tx) => {
      await gw.audit.append(tx, { ...base, type: 'user.password_change_failed', data: { reason: 'invalid_credentials', failures: checked.charge.failures } });
      if (checked.charge.lockedUntil !== null) {
        await gw.audit.append(tx, { ...base, type: 'login.locked', data: { username: user.username, failures: checked.charge.failures, lock_seconds: lockSeconds, locked_until: checked.charge.lockedUntil } });
      }
    });
    throw new AppError('invalid_credentials', { detail: 'The current password is incorrect.', invalidParams: [{ pointer: '/current_password', reason: 'not the current password' }] });
  }

  return db.transaction().execute(async (tx) => {
    const doneMs = gw.clock.now().getTime();
    if (!(await repo.rehashPassword(tx, checked.factorId, checked.verifiedPhc, checked.phc, doneMs))) {
      throw new AppError('conflict', { detail: 'The password was changed meanwhile; sign in again.' });
    }
    await repo.clearLoginThrottle(tx, key);
    const ended = await sessionsRepo.deleteUserSessions(tx, userId);
    const session = await createSessionIn(gw, tx, userId, ['pwd'], device === undefined ? {} : { device });
    await gw.audit.append(tx, { ...base, type: 'user.password_changed', data: { by: 'self', sessions_ended: ended } });
    return session;
  });
}
