import { AppError } from '../errors/app-error.ts';
import type { VerifyOutcome } from '../factors/factor.ts';
import type { Gateway } from '../gateway.ts';
import * as sessionsRepo from '../store/sessions-repository.ts';
import { createSessionIn, type NewSession } from './sessions.ts';
import { activeFactorRows, toFactorRecord } from './stepup-challenge.ts';
import type { AuditActor } from './users.ts';
import { applySuccess, chargeFactor, type FactorStateChange } from './verify-stepup-factor.ts';

/**
 * "Admins must themselves have a second factor." A staff session (admin, helpdesk, auditor)
 * opens the console only once it has been completed with a possession factor on top of the
 * password: an authenticator app (TOTP) or a hardware token, verified here, or a passkey
 * sign-in (WebAuthn with user verification, which is possession plus biometric/PIN by
 * itself). SMS codes and recovery codes do not count: SMS can be redirected (SIM swap) and
 * recovery codes are the fallback for a lost device, not a way to run the console.
 *
 * Completing it rotates the session (new id, new CSRF token; the old id stops working), so
 * a session id seen before the second factor never gains console rights; the new session
 * keeps the old one's absolute end. The attempt is
 * charged to the factor before the code is compared, and the code is consumed by the same
 * guarded update as in a step-up, so it cannot be replayed into a second session.
 */

/** Factor types that complete a console session from the console's own form. */
export const CONSOLE_SECOND_FACTOR_TYPES = ['totp', 'hardware_otp'] as const;
export type ConsoleSecondFactorType = (typeof CONSOLE_SECOND_FACTOR_TYPES)[number];

export function isConsoleSecondFactorType(v: unknown): v is ConsoleSecondFactorType {
  return typeof v === 'string' && (CONSOLE_SECOND_FACTOR_TYPES as readonly string[]).includes(v);
}

/** True when the session's sign-in included a second factor (its `amr`). */
export function sessionHasSecondFactor(amr: readonly string[]): boolean {
  // `mfa` is added only by completeSessionSecondFactor; hwk/swk + user only by a passkey sign-in.
  return amr.includes('mfa') || (amr.includes('user') && (amr.includes('hwk') || amr.includes('swk')));
}

export interface ConsoleFactorChoice {
  id: string;
  type: ConsoleSecondFactorType;
  label: string;
}

/** The staff user's factors that can complete a console session (and whether a passkey could). */
export async function consoleSecondFactors(gw: Gateway, userId: string): Promise<{ choices: ConsoleFactorChoice[]; passkeys: number }> {
  const rows = await gw.store.db
    .selectFrom('factors')
    .select(['id', 'type', 'label'])
    .where('user_id', '=', userId)
    .where('status', '=', 'active')
    .where('type', 'in', [...CONSOLE_SECOND_FACTOR_TYPES, 'webauthn'])
    .orderBy('created_at')
    .execute();
  const choices = rows.filter((r) => isConsoleSecondFactorType(r.type) && gw.factors.has(r.type)).map((r) => ({ id: r.id, type: r.type as ConsoleSecondFactorType, label: r.label }));
  return { choices, passkeys: rows.filter((r) => r.type === 'webauthn').length };
}

export interface SessionSecondFactorInput {
  factor: ConsoleSecondFactorType;
  factorId?: string | undefined;
  code: string;
}

export interface CurrentSession {
  idHash: string;
  userId: string;
  amr: readonly string[];
}

/**
 * Verifies a TOTP or hardware-token code for the signed-in user and replaces the session by
 * one whose `amr` records the second factor. Failures: `factor_not_allowed` (no such
 * factor, field `/factor` or `/factorId`), `factor_locked`, `factor_invalid` (one answer for
 * every wrong, replayed or expired code), `unauthorized` (the session ended meanwhile).
 */
export async function completeSessionSecondFactor(gw: Gateway, session: CurrentSession, input: SessionSecondFactorInput, who: AuditActor): Promise<NewSession & { amr: string[] }> {
  const now = gw.clock.now();
  const nowMs = now.getTime();
  const module = gw.factors.get(input.factor);
  if (module === undefined) throw new AppError('factor_not_allowed', { invalidParams: [{ pointer: '/factor', reason: 'this factor type is not enabled' }] });
  const rows = await activeFactorRows(gw.store.db, session.userId, input.factor, input.factorId);
  const row = rows.length === 1 || (input.factorId !== undefined && rows.length > 0) ? rows[0] : undefined;
  if (row === undefined) {
    throw new AppError('factor_not_allowed', {
      invalidParams: [{ pointer: input.factorId === undefined ? '/factor' : '/factorId', reason: rows.length > 1 ? 'several factors of this type: choose one' : 'no such enrolled factor' }],
    });
  }
  const base = { actor: session.userId, subject: session.userId, ip: who.ip ?? null, requestId: who.requestId ?? null };
  if (!(await chargeFactor(gw, row.id, nowMs, module.descriptor.lockout))) {
    await gw.audit.append(gw.store.db, { ...base, type: 'session.second_factor_failed', data: { factor: input.factor, factorId: row.id, reason: 'locked' } });
    throw new AppError('factor_locked');
  }
  const outcome = (await module.verify(toFactorRecord(row), { code: input.code }, { now })) as VerifyOutcome<FactorStateChange>;
  if (!outcome.ok) {
    await gw.audit.append(gw.store.db, { ...base, type: 'session.second_factor_failed', data: { factor: input.factor, factorId: row.id, reason: outcome.reason } });
    throw new AppError('factor_invalid');
  }
  const created = await gw.store.db.transaction().execute(async (tx) => {
    // The replay guard: of two uses of one code only one moves the counter.
    if (!(await applySuccess(tx, row.id, outcome.change, nowMs, row.params))) return 'replayed' as const;
    const previous = await sessionsRepo.findSessionWithUser(tx, session.idHash);
    if (previous === undefined || !(await sessionsRepo.deleteSession(tx, session.idHash))) return 'ended' as const;
    const amr = [...new Set([...session.amr, ...outcome.amr, 'mfa'])];
    // The new session ends when the password sign-in's would have: a code does not extend it.
    const next = await createSessionIn(gw, tx, session.userId, amr, { notAfterMs: Number(previous.expires_at), device: { userAgent: previous.user_agent ?? null, ip: previous.ip ?? null } });
    await gw.audit.append(tx, { ...base, type: 'session.second_factor_verified', data: { factor: input.factor, factorId: row.id, amr } });
    return { ...next, amr };
  });
  if (created === 'replayed') {
    await gw.audit.append(gw.store.db, { ...base, type: 'session.second_factor_failed', data: { factor: input.factor, factorId: row.id, reason: 'replayed' } });
    throw new AppError('factor_invalid');
  }
  if (created === 'ended') throw new AppError('unauthorized', { detail: 'The session ended; sign in again.' });
  return created;
}
