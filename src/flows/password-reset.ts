import { createHmac } from 'node:crypto';
import { constantTimeEqual } from '../crypto/constant-time.ts';
import { hashToken, newSecretToken } from '../crypto/ids.ts';
import { AppError } from '../errors/app-error.ts';
import { normalisePassword } from '../factors/password/policy.ts';
import type { Gateway } from '../gateway.ts';
import { consumeOnce } from '../store/primitives.ts';
import * as repo from '../store/users-repository.ts';
import { type AuditActor, getUser, loginThrottleKey, passwordPolicyError, passwordServices, storePasswordHash, type UserView } from './users.ts';

/**
 * Helpdesk password reset. The operator never learns or chooses the user's password: they
 * issue a one-time link (`/reset-password?token=…`, valid `admin.passwordResetLinkSeconds`)
 * and hand it to the user over a channel they trust (in person, a call-back to the number on
 * file). Whoever opens the link sets a new password; the link is consumed in the same
 * transaction that stores it (exactly one of concurrent submissions wins), every session
 * of the user ends and the login lock is lifted. Only the newest link of a user works. The
 * token is stored as a SHA-256 hash only.
 */
export const PASSWORD_RESET_PURPOSE = 'password_reset';
const MAX_TOKEN_LENGTH = 200;

export interface IssuedResetLink {
  url: string;
  expiresAt: Date;
}

/** Marks the user's unused reset tokens used, so only the newest link (or none) works. */
async function revokeResetTokens(gw: Gateway, executor: Parameters<typeof consumeOnce>[0], userId: string): Promise<number> {
  const result = await executor
    .updateTable('one_time_tokens')
    .set({ used_at: gw.clock.now().getTime() })
    .where('purpose', '=', PASSWORD_RESET_PURPOSE)
    .where('subject', '=', userId)
    .where('used_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

/**
 * Issues a reset link for `user` (the caller has checked who may). Audited
 * `password_reset.issued` with the operator and the reason; the token is in no log or event.
 */
export async function issuePasswordResetLink(gw: Gateway, user: UserView, who: AuditActor, reason: string): Promise<IssuedResetLink> {
  if (user.status !== 'active') {
    throw new AppError('conflict', { detail: 'The account is disabled: enable it first, then issue a reset link.' });
  }
  const token = newSecretToken();
  const nowMs = gw.clock.now().getTime();
  const expiresAtMs = nowMs + gw.config.admin.passwordResetLinkSeconds * 1000;
  await gw.store.db.transaction().execute(async (tx) => {
    const revoked = await revokeResetTokens(gw, tx, user.id);
    await tx
      .insertInto('one_time_tokens')
      .values({ id_hash: hashToken(token), purpose: PASSWORD_RESET_PURPOSE, subject: user.id, created_at: nowMs, expires_at: expiresAtMs, used_at: null })
      .execute();
    await gw.audit.append(tx, {
      type: 'password_reset.issued',
      actor: who.actor,
      subject: user.id,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      data: { reason, expiresAt: new Date(expiresAtMs).toISOString(), previousLinksRevoked: revoked },
    });
  });
  return { url: `${gw.config.http.publicUrl.replace(/\/+$/, '')}/reset-password?token=${encodeURIComponent(token)}`, expiresAt: new Date(expiresAtMs) };
}

/** The user a usable (unused, unexpired) reset token is for, or undefined. Consumes nothing. */
export async function resetTokenUser(gw: Gateway, token: string): Promise<UserView | undefined> {
  if (token === '' || token.length > MAX_TOKEN_LENGTH) return undefined;
  const row = await gw.store.db
    .selectFrom('one_time_tokens')
    .select('subject')
    .where('id_hash', '=', hashToken(token))
    .where('purpose', '=', PASSWORD_RESET_PURPOSE)
    .where('used_at', 'is', null)
    .where('expires_at', '>', gw.clock.now().getTime())
    .executeTakeFirst();
  if (row?.subject == null) return undefined;
  const user = await getUser(gw, row.subject);
  return user?.status === 'active' ? user : undefined;
}

/** The reset form's CSRF value: an HMAC of the token (there is no session to bind one to). */
export function resetFormCsrf(gw: Gateway, token: string): string {
  return createHmac('sha256', gw.sealer.deriveKey('password-reset-csrf')).update(token, 'utf8').digest('base64url');
}

export function checkResetFormCsrf(gw: Gateway, token: string, csrf: string): boolean {
  return constantTimeEqual(resetFormCsrf(gw, token), csrf);
}

function invalidLink(): AppError {
  return new AppError('reset_token_invalid', { detail: 'This password-reset link is invalid, expired or already used. Ask the helpdesk for a new one.' });
}

/**
 * Sets the new password through a reset link. The password is checked (policy, the user's
 * name) and hashed before the transaction; inside it the token is consumed with one
 * conditional update and the hash stored, so a refused password leaves the link usable and
 * of concurrent submissions exactly one sets a password.
 */
export async function completePasswordReset(gw: Gateway, input: { token: string; password: string }, who: Omit<AuditActor, 'actor'>): Promise<UserView> {
  const user = await resetTokenUser(gw, input.token);
  if (user === undefined) throw invalidLink();
  const policy = passwordPolicyError(gw, input.password, user.username);
  if (policy !== undefined) throw policy;
  const phc = await passwordServices(gw).hasher.hash(normalisePassword(input.password));
  await gw.store.db.transaction().execute(async (tx) => {
    const won = await consumeOnce(tx, {
      table: 'one_time_tokens',
      match: { id_hash: hashToken(input.token), purpose: PASSWORD_RESET_PURPOSE, subject: user.id },
      now: gw.clock.now(),
      expiresColumn: 'expires_at',
    });
    if (!won) throw invalidLink();
    const actor: AuditActor = { actor: user.id, ip: who.ip ?? null, requestId: who.requestId ?? null };
    const ended = await storePasswordHash(gw, tx, user.id, phc, actor, { via: 'reset_link' });
    const unlocked = await repo.clearLoginThrottle(tx, loginThrottleKey(gw, user.username));
    await gw.audit.append(tx, {
      type: 'password_reset.completed',
      actor: user.id,
      subject: user.id,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      data: { sessions_ended: ended, login_unlocked: unlocked },
    });
  });
  return user;
}
