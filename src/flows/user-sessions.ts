import { createHash } from 'node:crypto';
import { AppError } from '../errors/app-error.ts';
import type { Gateway } from '../gateway.ts';
import type { AuditActor } from './users.ts';

/**
 * A user's view of their own sessions (ASVS 5.0 V7.5.2) and the operator's "end this user's
 * sessions" (V7.4.5). A session is named by a handle derived from its id hash — never the
 * id, never the stored hash — so a listing shown on screen or in a log cannot be turned
 * into a session, nor into the key the sessions table is searched by.
 */

export interface SessionView {
  handle: string;
  createdAt: Date;
  lastSeenAt: Date;
  expiresAt: Date;
  authTime: Date;
  amr: string[];
  current: boolean;
  /** The User-Agent and address it was opened from (null for sessions older than migration 041). */
  userAgent: string | null;
  ip: string | null;
}

export function sessionHandle(idHash: string): string {
  return createHash('sha256').update(`session-handle:${idHash}`).digest('base64url').slice(0, 22);
}

export async function listOwnSessions(gw: Gateway, userId: string, currentIdHash: string): Promise<SessionView[]> {
  const nowMs = gw.clock.now().getTime();
  const idleSinceMs = nowMs - gw.config.session.idleSeconds * 1000;
  const rows = await gw.store.db
    .selectFrom('sessions')
    .selectAll()
    .where('user_id', '=', userId)
    .where('expires_at', '>', nowMs)
    .where('last_seen_at', '>', idleSinceMs)
    .orderBy('last_seen_at', 'desc')
    .execute();
  return rows.map((r) => ({
    handle: sessionHandle(r.id_hash),
    createdAt: new Date(Number(r.created_at)),
    lastSeenAt: new Date(Number(r.last_seen_at)),
    expiresAt: new Date(Number(r.expires_at)),
    authTime: new Date(Number(r.auth_time)),
    amr: JSON.parse(r.amr) as string[],
    current: r.id_hash === currentIdHash,
    userAgent: r.user_agent ?? null,
    ip: r.ip ?? null,
  }));
}

/** Ends one of the user's own sessions by its handle (the current one too: that is signing out). */
export async function endOwnSession(gw: Gateway, userId: string, currentIdHash: string, handle: string, who: AuditActor): Promise<{ current: boolean }> {
  return gw.store.db.transaction().execute(async (tx) => {
    const rows = await tx.selectFrom('sessions').select('id_hash').where('user_id', '=', userId).execute();
    const target = rows.find((r) => sessionHandle(r.id_hash) === handle);
    if (target === undefined) throw new AppError('not_found', { detail: 'No such session of yours.', invalidParams: [{ pointer: '/handle', reason: 'not one of your sessions' }] });
    const deleted = await tx.deleteFrom('sessions').where('id_hash', '=', target.id_hash).where('user_id', '=', userId).executeTakeFirst();
    if (Number(deleted.numDeletedRows) === 0) throw new AppError('not_found', { detail: 'That session has just ended.' });
    await gw.audit.append(tx, { actor: who.actor, subject: userId, ip: who.ip ?? null, requestId: who.requestId ?? null, type: 'session.ended', data: { by: 'self', handle } });
    return { current: target.id_hash === currentIdHash };
  });
}

/** Ends every session of the user but `keepIdHash` (none kept when undefined); audited with the count. */
export async function endUserSessions(gw: Gateway, userId: string, keepIdHash: string | undefined, who: AuditActor, data: Record<string, unknown>): Promise<number> {
  return gw.store.db.transaction().execute(async (tx) => {
    let q = tx.deleteFrom('sessions').where('user_id', '=', userId);
    if (keepIdHash !== undefined) q = q.where('id_hash', '!=', keepIdHash);
    const ended = Number((await q.executeTakeFirst()).numDeletedRows);
    await gw.audit.append(tx, { actor: who.actor, subject: userId, ip: who.ip ?? null, requestId: who.requestId ?? null, type: 'sessions.ended', data: { ...data, sessions_ended: ended } });
    return ended;
  });
}
