import { createHmac } from 'node:crypto';
import { constantTimeEqual } from '../crypto/constant-time.ts';
import { hashToken, newSecretToken } from '../crypto/ids.ts';
import { AppError } from '../errors/app-error.ts';
import type { Gateway } from '../gateway.ts';
import type { Executor } from '../store/database.ts';
import { consumeOnce } from '../store/primitives.ts';
import { type AuditActor, createUser, type UserView } from './users.ts';

/**
 * First-run bootstrap. There are no default credentials: while no administrator exists, a
 * start prints a one-time link (`/setup?token=…`) whose holder creates the first admin.
 * Only the newest link works, it expires after `admin.setupLinkSeconds`, it is consumed in
 * the same transaction that creates the admin (so exactly one concurrent submit wins), and
 * it stops working as soon as any administrator exists.
 */
export const ADMIN_SETUP_PURPOSE = 'admin_setup';

/** True when some user holds the `admin` role (roles are a JSON array of fixed names). */
export async function adminExists(executor: Executor): Promise<boolean> {
  const row = await executor.selectFrom('users').select('id').where('roles', 'like', '%"admin"%').limit(1).executeTakeFirst();
  return row !== undefined;
}

/** Marks every unused set-up token used, so only the newest link (or none) works. */
async function invalidateSetupTokens(executor: Executor, nowMs: number): Promise<number> {
  const result = await executor
    .updateTable('one_time_tokens')
    .set({ used_at: nowMs })
    .where('purpose', '=', ADMIN_SETUP_PURPOSE)
    .where('used_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

/**
 * When no administrator exists, issues a fresh set-up token (older unused ones stop working)
 * and returns the link to print; undefined otherwise.
 */
export async function firstRunSetupLink(gw: Gateway): Promise<string | undefined> {
  return gw.store.db.transaction().execute(async (tx) => {
    if (await adminExists(tx)) return undefined;
    const token = newSecretToken();
    const nowMs = gw.clock.now().getTime();
    const expiresAtMs = nowMs + gw.config.admin.setupLinkSeconds * 1000;
    const invalidated = await invalidateSetupTokens(tx, nowMs);
    await tx
      .insertInto('one_time_tokens')
      .values({ id_hash: hashToken(token), purpose: ADMIN_SETUP_PURPOSE, subject: null, created_at: nowMs, expires_at: expiresAtMs, used_at: null })
      .execute();
    await gw.audit.append(tx, {
      type: 'setup_link.issued',
      actor: 'system',
      data: { expiresAt: new Date(expiresAtMs).toISOString(), previousLinksRevoked: invalidated },
    });
    return `${gw.config.http.publicUrl.replace(/\/+$/, '')}/setup?token=${encodeURIComponent(token)}`;
  });
}

/** Whether a set-up token would currently be accepted (for showing the form; consumes nothing). */
export async function setupTokenUsable(gw: Gateway, token: string): Promise<boolean> {
  if (token === '' || token.length > 200) return false;
  const row = await gw.store.db
    .selectFrom('one_time_tokens')
    .select('id_hash')
    .where('id_hash', '=', hashToken(token))
    .where('purpose', '=', ADMIN_SETUP_PURPOSE)
    .where('used_at', 'is', null)
    .where('expires_at', '>', gw.clock.now().getTime())
    .executeTakeFirst();
  return row !== undefined && !(await adminExists(gw.store.db));
}

/**
 * The CSRF value of the set-up form: an HMAC of the token, so only a page rendered for this
 * very link can submit it (there is no session yet to bind a CSRF token to).
 */
export function setupFormCsrf(gw: Gateway, token: string): string {
  return createHmac('sha256', gw.sealer.deriveKey('admin-setup-csrf')).update(token, 'utf8').digest('base64url');
}

export function checkSetupFormCsrf(gw: Gateway, token: string, csrf: string): boolean {
  return constantTimeEqual(setupFormCsrf(gw, token), csrf);
}

export interface CompleteSetupInput {
  token: string;
  username: string;
  password: string;
  displayName?: string | undefined;
}

/**
 * Consumes the set-up token and creates the first administrator in ONE transaction: the
 * token is spent with a single conditional update (`used_at IS NULL AND expires_at > now`),
 * so of concurrent submissions exactly one creates an admin. Any failure (bad password,
 * taken name) rolls the consumption back, so the operator can correct and resubmit.
 */
export async function completeAdminSetup(gw: Gateway, input: CompleteSetupInput, who: Omit<AuditActor, 'actor'>): Promise<UserView> {
  const invalid = () => new AppError('setup_token_invalid', { detail: 'This set-up link is invalid, expired or already used. Restart the gateway to print a new one.' });
  if (input.token === '' || input.token.length > 200) throw invalid();
  return gw.store.db.transaction().execute(async (tx) => {
    const won = await consumeOnce(tx, {
      table: 'one_time_tokens',
      match: { id_hash: hashToken(input.token), purpose: ADMIN_SETUP_PURPOSE },
      now: gw.clock.now(),
      expiresColumn: 'expires_at',
    });
    if (!won) throw invalid();
    // An admin created meanwhile (`stepgate admin create`) makes every set-up link void.
    if (await adminExists(tx)) throw invalid();
    const user = await createUser(
      gw,
      { username: input.username, password: input.password, displayName: input.displayName, roles: ['admin'] },
      { actor: 'setup', ip: who.ip ?? null, requestId: who.requestId ?? null },
      tx,
    );
    await invalidateSetupTokens(tx, gw.clock.now().getTime());
    await gw.audit.append(tx, { type: 'admin_setup.completed', actor: 'setup', subject: user.id, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { username: user.username } });
    return user;
  });
}

/**
 * `stepgate admin create`: an administrator created directly by an operator on the host.
 * Pending set-up links are revoked in the same transaction.
 */
export async function createAdminDirectly(
  gw: Gateway,
  input: { username: string; password: string; displayName?: string | undefined; groups?: string[] | undefined },
  who: AuditActor,
): Promise<UserView> {
  return gw.store.db.transaction().execute(async (tx) => {
    const user = await createUser(gw, { ...input, roles: ['admin'] }, who, tx);
    await invalidateSetupTokens(tx, gw.clock.now().getTime());
    return user;
  });
}
