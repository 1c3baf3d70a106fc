import type { Executor } from './database.ts';
import type { SessionsTable } from './schema.ts';

/** Browser/API sessions, keyed by the SHA-256 of the session id (the id lives only in the cookie). */

export type SessionRow = SessionsTable;

export interface SessionWithUser extends SessionRow {
  username: string;
  roles: string;
  user_status: 'active' | 'disabled';
}

export async function insertSession(ex: Executor, row: SessionRow): Promise<void> {
  await ex.insertInto('sessions').values(row).execute();
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
  const r = await ex.deleteFrom('sessions').where('id_hash', '=', idHash).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

export async function deleteUserSessions(ex: Executor, userId: string): Promise<number> {
  const r = await ex.deleteFrom('sessions').where('user_id', '=', userId).executeTakeFirst();
  return Number(r.numDeletedRows);
}

/** Housekeeping at login: the user's sessions that are past their absolute or idle deadline. */
export async function deleteExpiredUserSessions(ex: Executor, userId: string, nowMs: number, idleSinceMs: number): Promise<number> {
  const r = await ex
    .deleteFrom('sessions')
    .where('user_id', '=', userId)
    .where((eb) => eb.or([eb('expires_at', '<=', nowMs), eb('last_seen_at', '<=', idleSinceMs)]))
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}
