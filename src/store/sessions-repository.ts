import type { Executor } from './database.ts';
import { FixedSql } from './fixed-sql.ts';
import type { SessionsTable } from './schema.ts';

/** Browser/API sessions, keyed by the SHA-256 of the session id (the id lives only in the cookie). */

export type SessionRow = SessionsTable;

export interface SessionWithUser extends SessionRow {
  username: string;
  roles: string;
  user_status: 'active' | 'disabled';
}

// Every sign-in runs these (fixed SQL, src/store/fixed-sql.ts).
const INSERT_SESSION = new FixedSql(
  'insert into "sessions" ("id_hash", "user_id", "csrf_token", "created_at", "last_seen_at", "expires_at", "auth_time", "amr", "user_agent", "ip") values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
);
const DELETE_SESSION = new FixedSql('delete from "sessions" where "id_hash" = ?');
const DELETE_EXPIRED_USER_SESSIONS = new FixedSql('delete from "sessions" where "user_id" = ? and ("expires_at" <= ? or "last_seen_at" <= ?)');

export async function insertSession(ex: Executor, row: SessionRow): Promise<void> {
  // Every column, named: a column added to SessionsTable fails to compile here until it is added to the statement.
  const { id_hash, user_id, csrf_token, created_at, last_seen_at, expires_at, auth_time, amr, user_agent, ip, ...rest } = row;
  const none: Record<string, never> = rest;
  void none;
  await INSERT_SESSION.run(ex, [id_hash, user_id, csrf_token, created_at, last_seen_at, expires_at, auth_time, amr, user_agent, ip]);
}

export async function findSessionWithUser(ex: Executor, idHash: string): Promise<SessionWithUser | undefined> {
  return ex
    .selectFrom('sessions')
    .innerJoin('users', 'users.id', 'sessions.user_id')
    .selectAll('sessions')
    .select(['users.username as username', 'users.roles as roles', 'users.status as user_status'])
    .where('sessions.id_hash', '=', idHash)
    .executeTakeFirst();
}

/** Moves the idle deadline; guarded so concurrent requests write at most once per interval. */
export async function touchSession(ex: Executor, idHash: string, nowMs: number, ifSeenBeforeMs: number): Promise<void> {
  await ex
    .updateTable('sessions')
    .set({ last_seen_at: nowMs })
    .where('id_hash', '=', idHash)
    .where('last_seen_at', '<', ifSeenBeforeMs)
    .execute();
}

export async function deleteSession(ex: Executor, idHash: string): Promise<boolean> {
  const r = await DELETE_SESSION.run(ex, [idHash]);
  return Number(r.numAffectedRows ?? 0) > 0;
}

export async function deleteUserSessions(ex: Executor, userId: string): Promise<number> {
  const r = await ex.deleteFrom('sessions').where('user_id', '=', userId).executeTakeFirst();
  return Number(r.numDeletedRows);
}

/** Housekeeping at login: the user's sessions that are past their absolute or idle deadline. */
export async function deleteExpiredUserSessions(ex: Executor, userId: string, nowMs: number, idleSinceMs: number): Promise<number> {
  const r = await DELETE_EXPIRED_USER_SESSIONS.run(ex, [userId, nowMs, idleSinceMs]);
  return Number(r.numAffectedRows ?? 0);
}
