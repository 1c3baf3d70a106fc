import { sql } from 'kysely';
import type { Executor } from './database.ts';
import { FixedSql } from './fixed-sql.ts';
import type { FactorsTable, LoginThrottleTable, UsersTable } from './schema.ts';

/**
 * Users, their password factor row, and the per-login-name throttle. Every function takes
 * the executor to run on (the database or the caller's transaction) and does one query.
 */

export type UserRow = UsersTable;
export type FactorRow = FactorsTable;

/** A unique-constraint violation on either dialect (PostgreSQL 23505, SQLite CONSTRAINT_UNIQUE/PRIMARYKEY). */
export function isUniqueViolation(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { code?: unknown; errcode?: unknown; message?: unknown };
  if (e.code === '23505') return true;
  if (e.errcode === 2067 || e.errcode === 1555) return true;
  return typeof e.message === 'string' && e.message.includes('UNIQUE constraint failed');
}

export async function insertUser(ex: Executor, row: UserRow): Promise<void> {
  await ex.insertInto('users').values(row).execute();
}

export async function findUserById(ex: Executor, id: string): Promise<UserRow | undefined> {
  return ex.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function findUserByUsername(ex: Executor, username: string): Promise<UserRow | undefined> {
  return ex.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst();
}

/** `%`, `_` and the escape character itself match literally. */
function likePattern(query: string): string {
  return `%${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

export async function listUsers(ex: Executor, opts: { query?: string; limit: number; offset: number }): Promise<UserRow[]> {
  let q = ex.selectFrom('users').selectAll();
  if (opts.query !== undefined && opts.query !== '') {
    const pattern = likePattern(opts.query.toLowerCase());
    q = q.where((eb) =>
      eb.or([
        eb(sql`lower(username)`, 'like', sql`${pattern} escape '\\'`),
        eb(sql`lower(display_name)`, 'like', sql`${pattern} escape '\\'`),
      ]),
    );
  }
  return q.orderBy('username').orderBy('id').limit(opts.limit).offset(opts.offset).execute();
}

/** Returns false when there is no such user. */
export async function updateUserStatus(ex: Executor, id: string, status: UserRow['status'], nowMs: number): Promise<boolean> {
  const r = await ex.updateTable('users').set({ status, updated_at: nowMs }).where('id', '=', id).executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

export interface UserWithPassword {
  user: UserRow;
  factor: FactorRow | undefined;
}

/**
 * The user and their password factor in one query, so the login path does the same
 * database work whether or not the name exists.
 */
/** A user and their password factor (if any), as one row (fixed SQL: every sign-in runs it). */
interface UserWithPasswordRow {
  u_id: string;
  u_username: string;
  u_display_name: string;
  u_roles: string;
  u_groups: string;
  u_status: UsersTable['status'];
  u_created_at: number;
  u_updated_at: number;
  f_id: string | null;
  f_status: FactorsTable['status'] | null;
  f_label: string | null;
  f_secret_hash: string | null;
  f_params: string | null;
  f_counter: number | null;
  f_failures: number | null;
  f_locked_until: number | null;
  f_created_at: number | null;
  f_updated_at: number | null;
  f_last_used_at: number | null;
}

// The statements of every sign-in, as fixed SQL (src/store/fixed-sql.ts): the text is what
// Kysely's builder compiled them to on both dialects (the tests compare results with it).
const USER_WITH_PASSWORD = new FixedSql<UserWithPasswordRow>(
  'select "users"."id" as "u_id", "users"."username" as "u_username", "users"."display_name" as "u_display_name", "users"."roles" as "u_roles", "users"."groups" as "u_groups", "users"."status" as "u_status", "users"."created_at" as "u_created_at", "users"."updated_at" as "u_updated_at", ' +
    '"factors"."id" as "f_id", "factors"."status" as "f_status", "factors"."label" as "f_label", "factors"."secret_hash" as "f_secret_hash", "factors"."params" as "f_params", "factors"."counter" as "f_counter", "factors"."failures" as "f_failures", "factors"."locked_until" as "f_locked_until", "factors"."created_at" as "f_created_at", "factors"."updated_at" as "f_updated_at", "factors"."last_used_at" as "f_last_used_at" ' +
    'from "users" left join "factors" on "factors"."user_id" = "users"."id" and "factors"."type" = \'password\' where "users"."username" = ? order by "factors"."created_at" desc',
);

export async function findUserWithPassword(ex: Executor, username: string): Promise<UserWithPassword | undefined> {
  const row = await USER_WITH_PASSWORD.first(ex, [username]);
  if (row === undefined) return undefined;
  const user: UserRow = {
    id: row.u_id,
    username: row.u_username,
    display_name: row.u_display_name,
    roles: row.u_roles,
    groups: row.u_groups,
    status: row.u_status,
    created_at: row.u_created_at,
    updated_at: row.u_updated_at,
  };
  const factor: FactorRow | undefined =
    row.f_id === null
      ? undefined
      : {
          id: row.f_id,
          user_id: row.u_id,
          type: 'password',
          label: row.f_label ?? '',
          status: row.f_status ?? 'disabled',
          secret_hash: row.f_secret_hash,
          secret_sealed: null,
          params: row.f_params ?? '{}',
          counter: row.f_counter ?? 0,
          failures: row.f_failures ?? 0,
          locked_until: row.f_locked_until,
          created_at: row.f_created_at ?? 0,
          updated_at: row.f_updated_at ?? 0,
          last_used_at: row.f_last_used_at,
        };
  return { user, factor };
}

export async function findPasswordFactor(ex: Executor, userId: string): Promise<FactorRow | undefined> {
  return ex
    .selectFrom('factors')
    .selectAll()
    .where('user_id', '=', userId)
    .where('type', '=', 'password')
    .orderBy('created_at', 'desc')
    .executeTakeFirst();
}

export async function insertFactor(ex: Executor, row: FactorRow): Promise<void> {
  await ex.insertInto('factors').values(row).execute();
}

/** Sets a password factor's hash (and re-activates it). */
export async function setPasswordHash(ex: Executor, factorId: string, phc: string, nowMs: number): Promise<void> {
  await ex
    .updateTable('factors')
    .set({ secret_hash: phc, status: 'active', failures: 0, locked_until: null, updated_at: nowMs })
    .where('id', '=', factorId)
    .execute();
}

/**
 * The rehash after a successful verification: only replaces the exact hash that was
 * verified, so a password changed meanwhile is never overwritten by the old one.
 */
export async function rehashPassword(ex: Executor, factorId: string, verifiedPhc: string, newPhc: string, nowMs: number): Promise<boolean> {
  const r = await ex
    .updateTable('factors')
    .set({ secret_hash: newPhc, updated_at: nowMs, last_used_at: nowMs })
    .where('id', '=', factorId)
    .where('secret_hash', '=', verifiedPhc)
    .executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

const MARK_FACTOR_USED = new FixedSql('update "factors" set "last_used_at" = ? where "id" = ?');

export async function markFactorUsed(ex: Executor, factorId: string, nowMs: number): Promise<void> {
  await MARK_FACTOR_USED.run(ex, [nowMs, factorId]);
}

// ---- login throttle --------------------------------------------------------------------

export type LoginThrottleRow = LoginThrottleTable;

export interface ChargeOptions {
  nowMs: number;
  maxFailures: number;
  /** When the lock ends if this charge reaches maxFailures. */
  lockUntilMs: number;
}

/**
 * Charges one login attempt to `key` BEFORE the password is compared, in one conditional
 * upsert: a new name starts at 1; a name whose lock has expired starts again at 1; a name
 * below `maxFailures` and not locked goes up by one; anything else (locked) is left alone
 * and returns undefined: the attempt is refused without a comparison. The charge that
 * reaches `maxFailures` sets the lock at once (a success clears it), so a crash between
 * charge and comparison can never leave a name counted but unlockable. Under concurrency,
 * on either database and across processes, exactly `maxFailures` attempts are charged.
 */
const EXPIRED = '(login_throttle.locked_until is not null and login_throttle.locked_until <= ?)';
const CHARGE_LOGIN_ATTEMPT = new FixedSql<{ failures: number; locked_until: number | null }>(
  'insert into "login_throttle" ("key", "failures", "locked_until", "last_failed_at") values (?, 1, ?, ?) on conflict ("key") do update set ' +
    `"failures" = (case when ${EXPIRED} then 1 else login_throttle.failures + 1 end), ` +
    `"locked_until" = (case when (case when ${EXPIRED} then 1 else login_throttle.failures + 1 end) >= ? then cast(? as bigint) else null end), ` +
    '"last_failed_at" = ? ' +
    `where ((login_throttle.locked_until is null and login_throttle.failures < ?) or ${EXPIRED}) returning "failures", "locked_until"`,
);

export async function chargeLoginAttempt(ex: Executor, key: string, o: ChargeOptions): Promise<{ failures: number; lockedUntil: number | null } | undefined> {
  const { nowMs, maxFailures, lockUntilMs } = o;
  const row = await CHARGE_LOGIN_ATTEMPT.first(ex, [key, 1 >= maxFailures ? lockUntilMs : null, nowMs, nowMs, nowMs, maxFailures, lockUntilMs, nowMs, maxFailures, nowMs]);
  if (row === undefined) return undefined;
  return { failures: Number(row.failures), lockedUntil: row.locked_until === null ? null : Number(row.locked_until) };
}

export async function findLoginThrottle(ex: Executor, key: string): Promise<LoginThrottleRow | undefined> {
  return ex.selectFrom('login_throttle').selectAll().where('key', '=', key).executeTakeFirst();
}

/**
 * A row at or over the limit without a lock (maxFailures was lowered by configuration)
 * gets its lock now, so it cannot stay refused forever.
 */
export async function lockIfUnlocked(ex: Executor, key: string, lockUntilMs: number): Promise<void> {
  await ex.updateTable('login_throttle').set({ locked_until: lockUntilMs }).where('key', '=', key).where('locked_until', 'is', null).execute();
}

/** Returns whether there was anything to clear. */
const CLEAR_LOGIN_THROTTLE = new FixedSql('delete from "login_throttle" where "key" = ?');

export async function clearLoginThrottle(ex: Executor, key: string): Promise<boolean> {
  const r = await CLEAR_LOGIN_THROTTLE.run(ex, [key]);
  return Number(r.numAffectedRows ?? 0) > 0;
}
