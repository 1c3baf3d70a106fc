import { createHmac } from 'node:crypto';
import { newId } from '../crypto/ids.ts';
import { AppError, type InvalidParam } from '../errors/app-error.ts';
import { type PasswordServices, passwordServicesFor } from '../factors/password/index.ts';
import { normalisePassword } from '../factors/password/policy.ts';
import type { Gateway } from '../gateway.ts';
import type { Executor, Tx } from '../store/database.ts';
import * as sessionsRepo from '../store/sessions-repository.ts';
import * as repo from '../store/users-repository.ts';

export type Role = 'admin' | 'helpdesk' | 'auditor';
export const ROLES: readonly Role[] = ['admin', 'helpdesk', 'auditor'];

export interface UserView {
  id: string;
  username: string;
  displayName: string;
  roles: Role[];
  groups: string[];
  status: 'active' | 'disabled';
  createdAt: Date;
}

/** Who did it, for the audit log. `actor` is a user id, 'cli' or 'setup'. */
export interface AuditActor {
  actor: string | null;
  ip?: string | null;
  requestId?: string | null;
}

// ---- password services ----------------------------------------------------------------

export type { PasswordServices };

/**
 * The hasher, policy and factor for this gateway's configuration (built once). The
 * routers call it at start-up so an unreadable extra blocklist file stops the process there.
 */
export function passwordServices(gw: Gateway): PasswordServices {
  return passwordServicesFor(gw.config);
}

// ---- names -------------------------------------------------------------------------------

/** The one form a login name is stored, looked up and throttled in. */
export function normaliseUsername(username: string): string {
  return username.normalize('NFKC').trim().toLowerCase();
}

const USERNAME = /^[a-z0-9._@-]{1,64}$/;

/** HMAC of the normalised login name: the throttle row reveals no names and unknown names are throttled like real ones. */
export function loginThrottleKey(gw: Gateway, normalisedUsername: string): string {
  return createHmac('sha256', gw.sealer.deriveKey('login-throttle')).update(normalisedUsername, 'utf8').digest('base64url');
}

/** The passkey sign-in throttle row of one WebAuthn credential (`:` never occurs in a login name, so it is no user's row). */
export function passkeyThrottleKey(gw: Gateway, factorId: string): string {
  return loginThrottleKey(gw, `passkey:${factorId}`);
}

// ---- views -------------------------------------------------------------------------------

function parseStringArray(json: string): string[] {
  try {
    const v: unknown = JSON.parse(json);
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

export function parseRoles(json: string): Role[] {
  return parseStringArray(json).filter((r): r is Role => (ROLES as readonly string[]).includes(r));
}

export function toUserView(row: repo.UserRow): UserView {
  return {
    id: row.id,
    username: row.username,
    displayName: row.display_name,
    roles: parseRoles(row.roles),
    groups: parseStringArray(row.groups),
    status: row.status,
    createdAt: new Date(Number(row.created_at)),
  };
}

function auditBase(who: AuditActor) {
  return { actor: who.actor, ip: who.ip ?? null, requestId: who.requestId ?? null };
}

/** Runs `fn` in the caller's transaction when given one, otherwise in a new one. */
async function inTransaction<T>(gw: Gateway, executor: Executor | undefined, fn: (tx: Tx) => Promise<T>): Promise<T> {
  if (executor?.isTransaction === true) return fn(executor as Tx);
  return (executor ?? gw.store.db).transaction().execute(fn);
}

function policyError(gw: Gateway, password: string, username: string): AppError | undefined {
  const violation = passwordServices(gw).policy.check(password, username);
  if (violation === undefined) return undefined;
  return new AppError('password_policy', {
    detail: `The password ${violation.message}.`,
    invalidParams: [{ pointer: '/password', reason: violation.message }],
  });
}

// ---- use cases ---------------------------------------------------------------------------

export interface CreateUserInput {
  username: string;
  displayName?: string;
  password: string;
  roles?: Role[];
  groups?: string[];
}

function validateCreateInput(input: CreateUserInput, username: string): { displayName: string; roles: Role[]; groups: string[] } {
  const invalid: InvalidParam[] = [];
  if (!USERNAME.test(username)) {
    invalid.push({ pointer: '/username', reason: '1 to 64 characters from a-z 0-9 . _ @ -' });
  }
  const displayName = (input.displayName ?? username).normalize('NFC').trim() || username;
  if (displayName.length > 128 || /\p{Cc}/u.test(displayName)) {
    invalid.push({ pointer: '/display_name', reason: 'at most 128 characters, no control characters' });
  }
  const roles = [...new Set(input.roles ?? [])];
  roles.forEach((r, i) => {
    if (!(ROLES as readonly string[]).includes(r)) invalid.push({ pointer: `/roles/${i}`, reason: `one of ${ROLES.join(', ')}` });
  });
  const groups = [...new Set((input.groups ?? []).map((g) => (typeof g === 'string' ? g.normalize('NFKC').trim() : g)))];
  groups.forEach((g, i) => {
    if (typeof g !== 'string' || !/^[\p{L}\p{N}._:@-]{1,64}$/u.test(g)) {
      invalid.push({ pointer: `/groups/${i}`, reason: '1 to 64 letters, digits or . _ : @ -' });
    }
  });
  if (invalid.length > 0) throw new AppError('validation_failed', { detail: 'The user is invalid.', invalidParams: invalid });
  return { displayName, roles, groups };
}

/**
 * Creates a user with a password factor; user, factor and the `user.created` audit event
 * are written in one transaction (the caller's, when `executor` is one). The password is
 * hashed before the transaction opens (unless the caller's is already open).
 */
export async function createUser(
  gw: Gateway,
  input: CreateUserInput,
  who: AuditActor,
  executor?: Executor,
): Promise<UserView> {
  const username = normaliseUsername(input.username);
  const { displayName, roles, groups } = validateCreateInput(input, username);
  const policy = policyError(gw, input.password, username);
  if (policy !== undefined) throw policy;
  const conflict = () => new AppError('conflict', { detail: 'A user with this username exists.', invalidParams: [{ pointer: '/username', reason: 'already taken' }] });
  const ex = executor ?? gw.store.db;
  if ((await repo.findUserByUsername(ex, username)) !== undefined) throw conflict();

  const phc = await passwordServices(gw).hasher.hash(normalisePassword(input.password));
  const nowMs = gw.clock.now().getTime();
  const row: repo.UserRow = {
    id: newId('usr'),
    username,
    display_name: displayName,
    roles: JSON.stringify(roles),
    groups: JSON.stringify(groups),
    status: 'active',
    created_at: nowMs,
    updated_at: nowMs,
  };
  try {
    await inTransaction(gw, executor, async (tx) => {
      if ((await repo.findUserByUsername(tx, username)) !== undefined) throw conflict();
      await repo.insertUser(tx, row);
      await repo.insertFactor(tx, {
        id: newId('fac'),
        user_id: row.id,
        type: 'password',
        label: '',
        status: 'active',
        secret_hash: phc,
        secret_sealed: null,
        params: '{}',
        counter: 0,
        failures: 0,
        locked_until: null,
        created_at: nowMs,
        updated_at: nowMs,
        last_used_at: null,
      });
      await gw.audit.append(tx, { ...auditBase(who), type: 'user.created', subject: row.id, data: { username, roles, groups } });
    });
  } catch (err) {
    if (repo.isUniqueViolation(err)) throw conflict();
    throw err;
  }
  return toUserView(row);
}

export async function findUserByUsername(gw: Gateway, username: string): Promise<UserView | undefined> {
  const row = await repo.findUserByUsername(gw.store.db, normaliseUsername(username));
  return row === undefined ? undefined : toUserView(row);
}

export async function getUser(gw: Gateway, id: string): Promise<UserView | undefined> {
  const row = await repo.findUserById(gw.store.db, id);
  return row === undefined ? undefined : toUserView(row);
}

export async function listUsers(gw: Gateway, opts: { query?: string; limit: number; offset: number }): Promise<UserView[]> {
  if (!Number.isInteger(opts.limit) || opts.limit < 0 || !Number.isInteger(opts.offset) || opts.offset < 0) {
    throw new TypeError('limit and offset must be non-negative integers');
  }
  const rows = await repo.listUsers(gw.store.db, { query: opts.query?.normalize('NFKC'), limit: opts.limit, offset: opts.offset });
  return rows.map(toUserView);
}

async function requireUserRow(gw: Gateway, userId: string): Promise<repo.UserRow> {
  const row = await repo.findUserById(gw.store.db, userId);
  if (row === undefined) throw new AppError('not_found', { detail: 'No such user.' });
  return row;
}

/** The policy check of a new password for a user, as an AppError naming /password (or undefined). */
export function passwordPolicyError(gw: Gateway, password: string, username: string): AppError | undefined {
  return policyError(gw, password, username);
}

/**
 * Writes a new password hash for the user in the caller's transaction (inserting the
 * password factor if the user has none), ends all of the user's sessions and audits
 * `user.password_set`. Returns how many sessions were ended.
 */
export async function storePasswordHash(gw: Gateway, tx: Tx, userId: string, phc: string, who: AuditActor, auditData: Record<string, unknown> = {}): Promise<number> {
  const nowMs = gw.clock.now().getTime();
  const factor = await repo.findPasswordFactor(tx, userId);
  if (factor === undefined) {
    await repo.insertFactor(tx, {
      id: newId('fac'),
      user_id: userId,
      type: 'password',
      label: '',
      status: 'active',
      secret_hash: phc,
      secret_sealed: null,
      params: '{}',
      counter: 0,
      failures: 0,
      locked_until: null,
      created_at: nowMs,
      updated_at: nowMs,
      last_used_at: null,
    });
  } else {
    await repo.setPasswordHash(tx, factor.id, phc, nowMs);
  }
  const ended = await sessionsRepo.deleteUserSessions(tx, userId);
  await gw.audit.append(tx, { ...auditBase(who), type: 'user.password_set', subject: userId, data: { ...auditData, sessions_ended: ended } });
  return ended;
}

/**
 * Sets a user's password (policy-checked) and ends all of the user's sessions: whoever
 * held the old password must not keep a session opened with it. A self-service change
 * must therefore open a new session for the user afterwards.
 */
export async function setPassword(gw: Gateway, userId: string, password: string, who: AuditActor): Promise<void> {
  const user = await requireUserRow(gw, userId);
  const policy = policyError(gw, password, user.username);
  if (policy !== undefined) throw policy;
  const phc = await passwordServices(gw).hasher.hash(normalisePassword(password));
  await gw.store.db.transaction().execute(async (tx) => {
    await storePasswordHash(gw, tx, userId, phc, who);
  });
}

/** Enables or disables a user. Disabling ends all of the user's sessions at once. */
export async function setUserStatus(gw: Gateway, userId: string, status: 'active' | 'disabled', who: AuditActor, reason: string): Promise<void> {
  const nowMs = gw.clock.now().getTime();
  await gw.store.db.transaction().execute(async (tx) => {
    if (!(await repo.updateUserStatus(tx, userId, status, nowMs))) throw new AppError('not_found', { detail: 'No such user.' });
    const ended = status === 'disabled' ? await sessionsRepo.deleteUserSessions(tx, userId) : 0;
    await gw.audit.append(tx, {
      ...auditBase(who),
      type: status === 'disabled' ? 'user.disabled' : 'user.enabled',
      subject: userId,
      data: { reason, sessions_ended: ended },
    });
  });
}

/** Clears the login throttle (failure count and lock) of the user's login name. */
export async function unlockLogin(gw: Gateway, userId: string, who: AuditActor, reason: string): Promise<void> {
  const user = await requireUserRow(gw, userId);
  const key = loginThrottleKey(gw, user.username);
  await gw.store.db.transaction().execute(async (tx) => {
    const row = await repo.findLoginThrottle(tx, key);
    await repo.clearLoginThrottle(tx, key);
    // The user's passkeys' sign-in throttles too (src/flows/webauthn.ts passkeyLogin).
    const passkeys = await tx.selectFrom('factors').select('id').where('user_id', '=', userId).where('type', '=', 'webauthn').execute();
    for (const p of passkeys) await repo.clearLoginThrottle(tx, passkeyThrottleKey(gw, p.id));
    const nowMs = gw.clock.now().getTime();
    await gw.audit.append(tx, {
      ...auditBase(who),
      type: 'login.unlocked',
      subject: userId,
      data: { reason, failures: row?.failures ?? 0, was_locked: row?.locked_until != null && Number(row.locked_until) > nowMs },
    });
  });
}
