import { createHmac } from 'node:crypto';
import { constantTimeEqual } from '../crypto/constant-time.ts';
import { newId, newSecretToken } from '../crypto/ids.ts';
import { AppError } from '../errors/app-error.ts';
import type { Gateway } from '../gateway.ts';
import type { Executor } from '../store/database.ts';
import * as sessionsRepo from '../store/sessions-repository.ts';
import type { ProvenFactor } from '../stepup/stepup-record.ts';
import { newStepUpRow } from './create-stepup.ts';
import { enrolledFactorTypes } from './policies.ts';
import { createSessionIn, type NewSession, type SessionDevice } from './sessions.ts';
import type { AuditActor } from './users.ts';

/**
 * "Confirm it's you": a password alone must not be enough to change a user's second factors.
 * Otherwise whoever learns the password signs in, enrols their own authenticator app or
 * phone, and from then on passes every step-up that asks for "a possession factor" — the
 * second factor would protect nothing. So once a user has any factor besides the password,
 * enrolling, removing or replacing factors (and the admin API, for staff) needs a session that
 * has proven one of them.
 *
 * The proof is an ordinary step-up transaction that the gateway opens for itself: client id
 * `stepgate` (no relying client has it, and no client can fetch its token), action
 * `account.confirm`, and a built-in requirement — any one of the user's enrolled non-password
 * factors — instead of the admin policies. So every factor works here exactly as in a payment
 * step-up: TOTP, hardware tokens, SMS codes, WebAuthn, recovery codes; attempts charged before
 * comparison, lockouts, single-use codes, the same page and JSON API.
 *
 * The step-up is bound to the session that opened it (its `state` is an HMAC of the session
 * id hash), finishing it is a consume-once move `completed → token_issued`, and the session is
 * replaced by a new one (new id, new CSRF token) whose `amr` records what was proven: a
 * session id seen before the confirmation never gains the right.
 */
export const SELF_CLIENT_ID = 'stepgate';
export const CONFIRM_ACTION = 'account.confirm';
export const SELF_POLICY_ID = 'builtin:account.confirm';
export const CONFIRM_PATH = '/security/confirm';
export const CONFIRMED_PATH = '/security/confirmed';

/** Factor types whose proof also opens the console (helper: flows/console-session.ts). */
const CONSOLE_STRENGTH = new Set(['totp', 'hardware_otp', 'webauthn']);

/** The user's enrolled factor types besides the password. */
export async function secondFactorTypes(gw: Gateway, userId: string, executor: Executor = gw.store.db): Promise<string[]> {
  return (await enrolledFactorTypes(gw, userId, executor)).filter((t) => t !== 'password');
}

/** Whether this session proved something besides the password (a second factor, a passkey). */
export function sessionProvedSecondFactor(amr: readonly string[]): boolean {
  return amr.some((v) => v !== 'pwd');
}

/**
 * True when the user had factors besides the password before this session signed in, and the
 * session has proven none of them. Factors enrolled during the session itself do not count:
 * the session just proved them (a first code, a registration), and a user who had nothing but
 * a password when signing in has nothing older to protect.
 */
export async function needsConfirmation(gw: Gateway, auth: { userId: string; amr: readonly string[]; authTime: Date }): Promise<boolean> {
  if (sessionProvedSecondFactor(auth.amr)) return false;
  const older = await gw.store.db
    .selectFrom('factors')
    .select('type')
    .where('user_id', '=', auth.userId)
    .where('status', '=', 'active')
    .where('type', '!=', 'password')
    .where('created_at', '<', auth.authTime.getTime())
    .execute();
  return older.some((r) => gw.factors.has(r.type as never));
}

function stateFor(gw: Gateway, sessionIdHash: string, stepupId: string): string {
  return createHmac('sha256', gw.sealer.deriveKey('session-confirm')).update(`${sessionIdHash}.${stepupId}`).digest('base64url');
}

export interface StartedConfirmation {
  stepupId: string;
  ticket: string;
  userUrl: string;
  expiresIn: number;
  options: string[][];
}

export interface ConfirmingSession {
  idHash: string;
  userId: string;
  amr: readonly string[];
  /** The browser the session is for; the session that replaces it keeps it. */
  device?: SessionDevice;
}

/** Opens the self step-up for this session. `binding` is the text the step-up page shows. */
export async function startConfirmation(gw: Gateway, session: ConfirmingSession, binding: string, who: AuditActor): Promise<StartedConfirmation> {
  const types = await secondFactorTypes(gw, session.userId);
  if (types.length === 0) throw new AppError('validation_failed', { detail: 'You have no factor besides the password: nothing to confirm with.', invalidParams: [{ pointer: '', reason: 'no second factor enrolled' }] });
  const { transactionSeconds } = gw.config.stepup;
  const id = newId('stp');
  const ticket = newSecretToken();
  const base = gw.config.http.publicUrl.replace(/\/$/, '');
  const anyOf = types.map((t) => [t]);
  await gw.store.db.transaction().execute(async (tx) => {
    const values = newStepUpRow(gw, {
      id,
      clientId: SELF_CLIENT_ID,
      userId: session.userId,
      action: CONFIRM_ACTION,
      context: {},
      bindingMessage: binding,
      redirectUri: `${base}${CONFIRMED_PATH}`,
      state: stateFor(gw, session.idHash, id),
      policyId: SELF_POLICY_ID,
      policyVersion: 0,
      anyOf,
      acr: 'urn:stepgate:aal1',
      tokenTtlSeconds: 0,
      maxAgeSeconds: 0,
      ticket,
    });
    await tx.insertInto('stepups').values(values).execute();
    await gw.audit.append(tx, {
      type: 'session.confirmation_started',
      actor: session.userId,
      subject: session.userId,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      data: { stepupId: id, options: types },
    });
  });
  gw.metrics.stepups.inc({ event: 'created' });
  return { stepupId: id, ticket, userUrl: `${base}/stepup/${id}?ticket=${ticket}`, expiresIn: transactionSeconds, options: anyOf };
}

/**
 * Finishes a completed self step-up of this session: consumes it once and replaces the
 * session by one that records the proof. `state` comes back on the page's return URL; the
 * JSON API passes none (the session binding is checked all the same). Every refusal is the
 * same `confirmation_invalid`: unknown, another user's or another session's, not completed,
 * expired, already used.
 */
export async function finishConfirmation(gw: Gateway, session: ConfirmingSession, stepupId: string, state: string | undefined, who: AuditActor): Promise<NewSession & { amr: string[] }> {
  const nowMs = gw.clock.now().getTime();
  const expected = stateFor(gw, session.idHash, stepupId);
  if (state !== undefined && !constantTimeEqual(state, expected)) throw new AppError('confirmation_invalid');
  const result = await gw.store.db.transaction().execute(async (tx) => {
    const row = await tx
      .selectFrom('stepups')
      .select(['id', 'proven', 'state'])
      .where('id', '=', stepupId)
      .where('client_id', '=', SELF_CLIENT_ID)
      .where('action', '=', CONFIRM_ACTION)
      .where('user_id', '=', session.userId)
      .executeTakeFirst();
    if (row === undefined || row.state === null || !constantTimeEqual(row.state, expected)) return undefined;
    const moved = await tx
      .updateTable('stepups')
      .set({ status: 'token_issued', token_issued_at: nowMs })
      .where('id', '=', stepupId)
      .where('status', '=', 'completed')
      .where('expires_at', '>', nowMs)
      .executeTakeFirst();
    if (Number(moved.numUpdatedRows) !== 1) return undefined;
    if (!(await sessionsRepo.deleteSession(tx, session.idHash))) return 'ended' as const;
    const proven = JSON.parse(row.proven) as ProvenFactor[];
    const types = proven.map((p) => p.type);
    const amr = [...new Set([...session.amr, ...proven.flatMap((p) => p.amr), ...(types.some((t) => CONSOLE_STRENGTH.has(t)) ? ['mfa'] : [])])];
    const next = await createSessionIn(gw, tx, session.userId, amr, session.device === undefined ? {} : { device: session.device });
    await gw.audit.append(tx, {
      type: 'session.confirmed',
      actor: session.userId,
      subject: session.userId,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      data: { stepupId, factors: types, amr },
    });
    return { ...next, amr };
  });
  if (result === 'ended') throw new AppError('unauthorized', { detail: 'The session ended; sign in again.' });
  if (result === undefined) {
    await gw.audit.append(gw.store.db, { type: 'session.confirmation_refused', actor: session.userId, subject: session.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { stepupId: stepupId.slice(0, 80) } });
    throw new AppError('confirmation_invalid');
  }
  return result;
}
