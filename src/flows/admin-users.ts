import { sql } from 'kysely';
import { type ChainResult, verifyAuditChain } from '../audit/audit-log.ts';
import { AppError } from '../errors/app-error.ts';
import type { Gateway } from '../gateway.ts';
import * as sessionsRepo from '../store/sessions-repository.ts';
import { removeFactor, removeFactorIn } from './factors.ts';
import { type IssuedResetLink, issuePasswordResetLink } from './password-reset.ts';
import { endUserSessions } from './user-sessions.ts';
import { type AuditActor, getUser, loginThrottleKey, ROLES, setUserStatus, unlockLogin, type UserView } from './users.ts';

/**
 * Admin-console use cases on top of the user flows: who may act on whom, the user detail a
 * helpdesk needs, and reading / verifying the audit log. Role checks per route live in
 * http/admin-router.ts; the rules here are about the *target* of an action.
 */

/** The signed-in operator performing an admin action. */
export interface Operator {
  userId: string;
  roles: readonly string[];
  ip: string | null;
  requestId: string | null;
}

function actorOf(op: Operator): AuditActor {
  return { actor: op.userId, ip: op.ip, requestId: op.requestId };
}

async function requireUser(gw: Gateway, userId: string): Promise<UserView> {
  const user = await getUser(gw, userId);
  if (user === undefined) throw new AppError('not_found', { detail: 'No such user.' });
  return user;
}

/**
 * Helpdesk staff manage ordinary accounts; only an administrator acts on a staff account
 * (admin, helpdesk or auditor). Otherwise helpdesk could lock staff out, re-open a disabled
 * staff account, or — since the operator is handed the reset link — take one over: reset an
 * auditor's factors, issue the reset link, set the password and enrol a factor of their own,
 * and hold the auditor's role (the audit log) or act under another helpdesk operator's name.
 * Nobody disables their own account: the last administrator cannot lock everybody out by
 * accident.
 */
function assertMayManage(op: Operator, target: UserView, action: 'unlock' | 'disable' | 'enable' | 'reset the password of' | 'reset the factors of' | 'remove a factor of' | 'end the sessions of'): void {
  if (!op.roles.includes('admin')) {
    if (target.roles.includes('admin')) throw new AppError('forbidden', { detail: `Only an administrator can ${action} an administrator.` });
    // Every role is a staff role (flows/users.ts ROLES): a user with any role is staff.
    if (target.roles.some((r) => (ROLES as readonly string[]).includes(r))) throw new AppError('forbidden', { detail: `Only an administrator can ${action} a staff account (helpdesk or auditor).` });
  }
  if (action === 'disable' && target.id === op.userId) {
    throw new AppError('conflict', { detail: 'You cannot disable your own account.' });
  }
}

export interface UserDetail extends UserView {
  factors: { id: string; type: string; label: string; status: string; createdAt: Date; lastUsedAt: Date | null }[];
  login: { failures: number; lockedUntil: Date | null };
}

/** A user with their factors (metadata only, never secrets) and login-throttle state. */
export async function userDetail(gw: Gateway, userId: string): Promise<UserDetail> {
  const user = await requireUser(gw, userId);
  const factors = await gw.store.db
    .selectFrom('factors')
    .select(['id', 'type', 'label', 'status', 'created_at', 'last_used_at'])
    .where('user_id', '=', userId)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  const throttle = await gw.store.db
    .selectFrom('login_throttle')
    .select(['failures', 'locked_until'])
    .where('key', '=', loginThrottleKey(gw, user.username))
    .executeTakeFirst();
  const nowMs = gw.clock.now().getTime();
  const lockedUntil = throttle?.locked_until == null || Number(throttle.locked_until) <= nowMs ? null : new Date(Number(throttle.locked_until));
  return {
    ...user,
    factors: factors.map((f) => ({
      id: f.id,
      type: f.type,
      label: f.label,
      status: f.status,
      createdAt: new Date(Number(f.created_at)),
      lastUsedAt: f.last_used_at == null ? null : new Date(Number(f.last_used_at)),
    })),
    login: { failures: Number(throttle?.failures ?? 0), lockedUntil },
  };
}

export async function unlockUser(gw: Gateway, op: Operator, userId: string, reason: string): Promise<UserDetail> {
  assertMayManage(op, await requireUser(gw, userId), 'unlock');
  await unlockLogin(gw, userId, actorOf(op), reason);
  return userDetail(gw, userId);
}

/** Ends every session of the user (a stolen laptop, a suspicious sign-in); who and why are audited. */
export async function endSessionsOfUser(gw: Gateway, op: Operator, userId: string, reason: string): Promise<number> {
  assertMayManage(op, await requireUser(gw, userId), 'end the sessions of');
  return endUserSessions(gw, userId, undefined, actorOf(op), { by: 'operator', reason });
}

export async function changeUserStatus(gw: Gateway, op: Operator, userId: string, status: 'active' | 'disabled', reason: string): Promise<UserDetail> {
  assertMayManage(op, await requireUser(gw, userId), status === 'disabled' ? 'disable' : 'enable');
  await setUserStatus(gw, userId, status, actorOf(op), reason);
  return userDetail(gw, userId);
}

// ---- helpdesk: password reset and factor reset ----------------------------------------------

/**
 * Issues a one-time password-reset link for the user (flows/password-reset.ts). The operator
 * hands it over; they never see or choose the password.
 */
export async function issuePasswordReset(gw: Gateway, op: Operator, userId: string, reason: string): Promise<IssuedResetLink> {
  const user = await requireUser(gw, userId);
  assertMayManage(op, user, 'reset the password of');
  return issuePasswordResetLink(gw, user, actorOf(op), reason);
}

/**
 * The password is not removed by the helpdesk: without it the user could not sign in to
 * enrol anything again. It is reset with a link instead.
 */
const NOT_OPERATOR_REMOVABLE = new Set(['password']);

/** Removes one factor of a user (lost phone, broken token), audited `factor.removed` with who and why. */
export async function removeUserFactor(gw: Gateway, op: Operator, userId: string, factorId: string, reason: string): Promise<UserDetail> {
  const user = await requireUser(gw, userId);
  assertMayManage(op, user, 'remove a factor of');
  const row = await gw.store.db.selectFrom('factors').select(['id', 'type']).where('id', '=', factorId).where('user_id', '=', userId).executeTakeFirst();
  if (row === undefined) throw new AppError('not_found', { detail: 'The user has no such factor.' });
  if (NOT_OPERATOR_REMOVABLE.has(row.type)) {
    throw new AppError('conflict', { detail: 'The password is not removed: issue a password-reset link instead.', invalidParams: [{ pointer: '/factor_id', reason: 'the password factor' }] });
  }
  await removeFactor(gw, userId, factorId, { ...actorOf(op), reason }, { byOperator: true });
  return userDetail(gw, userId);
}

export interface FactorReset {
  user: UserDetail;
  removed: { id: string; type: string }[];
  sessionsEnded: number;
}

/**
 * "Reset factors": removes every factor of the user except the password (or only those of
 * `types`), each audited `factor.removed`, ends the user's sessions (a session opened by
 * whoever holds a lost device must not enrol a new one) and records one `user.factors_reset`
 * event with who, why and what was removed — all in one transaction: a reset that fails
 * part-way changes nothing (it used to leave some factors removed and the sessions alive).
 */
export async function resetUserFactors(gw: Gateway, op: Operator, userId: string, reason: string, types?: readonly string[]): Promise<FactorReset> {
  const user = await requireUser(gw, userId);
  assertMayManage(op, user, 'reset the factors of');
  const { removed, sessionsEnded } = await gw.store.db.transaction().execute(async (tx) => {
    let q = tx.selectFrom('factors').select(['id', 'type']).where('user_id', '=', userId).where('status', 'in', ['active', 'pending']);
    if (types !== undefined && types.length > 0) q = q.where('type', 'in', [...types]);
    const rows = (await q.orderBy('created_at').orderBy('id').execute()).filter((r) => !NOT_OPERATOR_REMOVABLE.has(r.type));
    const done: { id: string; type: string }[] = [];
    for (const row of rows) {
      try {
        await removeFactorIn(gw, tx, userId, row.id, { ...actorOf(op), reason }, { byOperator: true });
        done.push({ id: row.id, type: row.type });
      } catch (err) {
        // Removed meanwhile (by the user, or a second operator): already what we want.
        if (!(err instanceof AppError && err.code === 'not_found')) throw err;
      }
    }
    const ended = await sessionsRepo.deleteUserSessions(tx, userId);
    await gw.audit.append(tx, {
      type: 'user.factors_reset',
      ...actorOf(op),
      subject: userId,
      data: { reason, removed: done.map((r) => ({ factorId: r.id, factorType: r.type })), ...(types === undefined ? {} : { types: [...types] }), sessions_ended: ended },
    });
    return { removed: done, sessionsEnded: ended };
  });
  return { user: await userDetail(gw, userId), removed, sessionsEnded };
}

// ---- audit log ---------------------------------------------------------------------------

export interface AuditFilter {
  /** Exact event type, or a prefix ending in `*` (`user.*`). */
  type?: string | undefined;
  subject?: string | undefined;
  actor?: string | undefined;
  since?: Date | undefined;
  until?: Date | undefined;
  /** Only events up to this sequence number (an export's snapshot and its keyset cursor). */
  maxSeq?: number | undefined;
  limit: number;
  offset: number;
}

export interface AuditEventView {
  seq: number;
  at: Date;
  type: string;
  actor: string | null;
  subject: string | null;
  ip: string | null;
  requestId: string | null;
  data: Record<string, unknown>;
  hash: string;
}

/**
 * Keys that must never hold a secret. Events are written without secrets; this is the
 * second line of defence for what the API shows (the stored row, and its hash, are untouched).
 */
const SECRET_KEYS = new Set(['password', 'newpassword', 'currentpassword', 'secret', 'seed', 'token', 'ticket', 'otp', 'masterkey', 'client_secret', 'step_up_token', 'private_key', 'privatekey']);

function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = SECRET_KEYS.has(k.toLowerCase()) ? '[redacted]' : redact(v);
  return out;
}

function parseData(json: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(json);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (redact(v) as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** Newest first. `limit + 1` rows are read so the caller learns whether more exist. */
export async function listAuditEvents(gw: Gateway, filter: AuditFilter): Promise<{ events: AuditEventView[]; hasMore: boolean }> {
  let q = gw.store.db.selectFrom('audit_log').selectAll();
  if (filter.type !== undefined) {
    if (filter.type.endsWith('*')) {
      const prefix = filter.type.slice(0, -1);
      // substr, not LIKE: `_` in event types would be a LIKE wildcard.
      if (prefix !== '') q = q.where(sql<string>`substr(type, 1, ${prefix.length})`, '=', prefix);
    } else {
      q = q.where('type', '=', filter.type);
    }
  }
  if (filter.subject !== undefined) q = q.where('subject', '=', filter.subject);
  if (filter.actor !== undefined) q = q.where('actor', '=', filter.actor);
  if (filter.since !== undefined) q = q.where('at', '>=', filter.since.getTime());
  if (filter.until !== undefined) q = q.where('at', '<', filter.until.getTime());
  if (filter.maxSeq !== undefined) q = q.where('seq', '<=', filter.maxSeq);
  const rows = await q.orderBy('seq', 'desc').limit(filter.limit + 1).offset(filter.offset).execute();
  const events = rows.slice(0, filter.limit).map((r) => ({
    seq: Number(r.seq),
    at: new Date(Number(r.at)),
    type: r.type,
    actor: r.actor,
    subject: r.subject,
    ip: r.ip,
    requestId: r.request_id,
    data: parseData(r.data),
    hash: r.hash,
  }));
  return { events, hasMore: rows.length > filter.limit };
}

/**
 * Starts an export of the audit log: records who exports what (`audit.exported`, with the
 * filter and the last event it covers) before a single event leaves, and answers that last
 * event's number — the export reads only up to it, so events appended meanwhile neither
 * shift its pages nor slip into it.
 */
export async function startAuditExport(gw: Gateway, op: Operator, filter: Record<string, string>): Promise<number> {
  return gw.store.db.transaction().execute(async (tx) => {
    const head = await tx.selectFrom('audit_log').select((eb) => eb.fn.max<number | string | null>('seq').as('seq')).executeTakeFirst();
    const upToSeq = Number(head?.seq ?? 0);
    await gw.audit.append(tx, { type: 'audit.exported', ...actorOf(op), data: { filter, upToSeq } });
    return upToSeq;
  });
}

/** Verifies the whole chain and records who checked it and the outcome. */
export async function verifyAuditLog(gw: Gateway, op: Operator): Promise<ChainResult> {
  const result = await verifyAuditChain(gw.store.db);
  await gw.audit.append(gw.store.db, {
    type: 'audit.verified',
    ...actorOf(op),
    data: result.ok ? { ok: true, rows: result.rows } : { ok: false, rows: result.rows, brokenSeq: result.brokenSeq, reason: result.reason },
  });
  return result;
}

