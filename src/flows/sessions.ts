import { hashToken, newSecretToken } from '../crypto/ids.ts';
import type { Gateway } from '../gateway.ts';
import type { Executor } from '../store/database.ts';
import * as repo from '../store/sessions-repository.ts';
import type { AuditActor } from './users.ts';

/**
 * Sessions: a 256-bit random id in the cookie, its SHA-256 in the database, a per-session
 * CSRF token, an idle deadline (`session.idleSeconds` since last use) and an absolute one
 * (`session.absoluteSeconds` since login).
 */

export interface NewSession {
  sessionId: string;
  csrfToken: string;
  /** The absolute end; the session ends earlier after `session.idleSeconds` without use. */
  expiresAt: Date;
}

/** What a session was opened from, shown in the user's list of signed-in devices; nothing is decided on it. */
export interface SessionDevice {
  userAgent: string | null;
  ip: string | null;
}

export const UNKNOWN_DEVICE: SessionDevice = { userAgent: null, ip: null };

const MAX_USER_AGENT = 256;

/** Stored as given but bounded: control characters removed, at most 256 characters. */
export function normaliseDevice(device: SessionDevice): SessionDevice {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: removing them is the point
  const ua = device.userAgent?.replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, MAX_USER_AGENT);
  const ip = device.ip?.slice(0, 64);
  return { userAgent: ua === undefined || ua === '' ? null : ua, ip: ip === undefined || ip === '' ? null : ip };
}

export interface ResolvedSession {
  idHash: string;
  userId: string;
  username: string;
  roles: string[];
  csrfToken: string;
  authTime: Date;
  amr: string[];
  expiresAt: Date;
  device: SessionDevice;
}

/** Only one write per this interval (at most) moves a session's idle deadline. */
function touchIntervalMs(gw: Gateway): number {
  return Math.min(60, Math.max(1, Math.floor(gw.config.session.idleSeconds / 10))) * 1000;
}

function parseJsonArray(json: string): string[] {
  try {
    const v: unknown = JSON.parse(json);
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

export interface NewSessionOptions {
  /**
   * Caps its absolute end: a session that replaces another (completing a second factor) ends
   * when the one it replaces would have, so re-verifying never extends a sign-in.
   */
  notAfterMs?: number;
  /** The browser it is for (a replacing session: the one it replaces). */
  device?: SessionDevice;
}

/** Creates a session on `executor` (the login transaction, say). */
export async function createSessionIn(gw: Gateway, executor: Executor, userId: string, amr: string[], options: NewSessionOptions = {}): Promise<NewSession> {
  const { notAfterMs } = options;
  const device = normaliseDevice(options.device ?? UNKNOWN_DEVICE);
  const sessionId = newSecretToken();
  const csrfToken = newSecretToken();
  const nowMs = gw.clock.now().getTime();
  const expiresAtMs = Math.min(nowMs + gw.config.session.absoluteSeconds * 1000, notAfterMs ?? Number.POSITIVE_INFINITY);
  await repo.insertSession(executor, {
    id_hash: hashToken(sessionId),
    user_id: userId,
    csrf_token: csrfToken,
    created_at: nowMs,
    last_seen_at: nowMs,
    expires_at: expiresAtMs,
    auth_time: nowMs,
    amr: JSON.stringify([...new Set(amr)]),
    user_agent: device.userAgent,
    ip: device.ip,
  });
  return { sessionId, csrfToken, expiresAt: new Date(expiresAtMs) };
}

export async function createSession(gw: Gateway, userId: string, amr: string[], device?: SessionDevice): Promise<NewSession> {
  return createSessionIn(gw, gw.store.db, userId, amr, device === undefined ? {} : { device });
}

/**
 * The live session for a cookie value, or undefined (unknown, expired, idle too long, user
 * disabled). A dead session's row is deleted; a live one's idle deadline moves.
 */
export async function resolveSession(gw: Gateway, sessionId: string): Promise<ResolvedSession | undefined> {
  if (sessionId === '' || sessionId.length > 128) return undefined;
  const idHash = hashToken(sessionId);
  const row = await repo.findSessionWithUser(gw.store.db, idHash);
  if (row === undefined) return undefined;
  const nowMs = gw.clock.now().getTime();
  const lastSeen = Number(row.last_seen_at);
  const dead =
    Number(row.expires_at) <= nowMs ||
    lastSeen + gw.config.session.idleSeconds * 1000 <= nowMs ||
    row.user_status !== 'active';
  if (dead) {
    await repo.deleteSession(gw.store.db, idHash);
    return undefined;
  }
  const interval = touchIntervalMs(gw);
  if (nowMs - lastSeen >= interval) await repo.touchSession(gw.store.db, idHash, nowMs, nowMs - interval + 1);
  return {
    idHash,
    userId: row.user_id,
    username: row.username,
    roles: parseJsonArray(row.roles),
    csrfToken: row.csrf_token,
    authTime: new Date(Number(row.auth_time)),
    amr: parseJsonArray(row.amr),
    expiresAt: new Date(Number(row.expires_at)),
    device: { userAgent: row.user_agent ?? null, ip: row.ip ?? null },
  };
}

/** When a live session ends at the latest (its absolute deadline). */
export async function sessionExpiresAt(gw: Gateway, idHash: string): Promise<Date | undefined> {
  const row = await repo.findSessionWithUser(gw.store.db, idHash);
  return row === undefined ? undefined : new Date(Number(row.expires_at));
}

/** Deletes a session by its cookie value (no audit: used for rotation inside login). */
export async function destroySession(gw: Gateway, sessionId: string, executor: Executor = gw.store.db): Promise<boolean> {
  return repo.deleteSession(executor, hashToken(sessionId));
}

/** Logout: deletes the session and records `session.ended` in one transaction. */
export async function endSession(gw: Gateway, idHash: string, userId: string, who: AuditActor): Promise<void> {
  await gw.store.db.transaction().execute(async (tx) => {
    if (!(await repo.deleteSession(tx, idHash))) return;
    await gw.audit.append(tx, {
      actor: who.actor,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      type: 'session.ended',
      subject: userId,
      data: { reason: 'logout' },
    });
  });
}

/** Ends every session of a user (password reset, disabling, factor removal). */
export async function revokeUserSessions(gw: Gateway, userId: string, executor: Executor = gw.store.db): Promise<number> {
  return repo.deleteUserSessions(executor, userId);
}
