import type { Kysely, Selectable } from 'kysely';
import type { Executor } from './database.ts';
import type { Database } from './schema.ts';

/**
 * The atomic patterns every flow uses, written once so that each is ONE conditional
 * statement on either database. Under concurrency (threads, pooled connections, several
 * gateway processes on one PostgreSQL) the database decides the single winner: the
 * statement's WHERE clause is re-checked on the row it locks, so a caller that matched 0
 * rows lost the race (or the thing was already used, expired, stale or at its limit) and
 * must treat it exactly so. Never read-then-write these values in application code.
 *
 * All helpers take an Executor: pass `gw.store.db`, or the `tx` of the transaction the
 * change belongs to (its audit event is then appended in the same transaction).
 *
 * Column names are checked against `Database` (src/store/schema.ts) at compile time; the
 * query itself is built through an untyped view of Kysely because its builder cannot type
 * a table chosen by a generic parameter.
 */

/** Tables of the schema. */
export type TableName = keyof Database & string;

/** A table's row as read (Generated<> unwrapped). */
export type Row<T extends TableName> = Selectable<Database[T]>;

/** Columns of table T whose values can hold a V (e.g. the integer columns). */
export type ColumnOf<T extends TableName, V> = {
  [C in keyof Row<T> & string]: V extends Row<T>[C] ? C : never;
}[keyof Row<T> & string];

/** Nullable integer columns: where a "used at" / "consumed at" instant is recorded. */
export type NullableInstantColumn<T extends TableName> = {
  [C in keyof Row<T> & string]: null extends Row<T>[C] ? (number extends Row<T>[C] ? C : never) : never;
}[keyof Row<T> & string];

/** Tables that have at least one nullable integer column (candidates for consume-once). */
export type ConsumableTable = {
  [T in TableName]: NullableInstantColumn<T> extends never ? never : T;
}[TableName];

/**
 * Equality conditions that identify the row(s), e.g. `{ id_hash: h, purpose: 'admin_setup' }`.
 * Every condition must hold. A `null` value matches SQL NULL (`IS NULL`).
 */
export type Match<T extends TableName> = { [C in keyof Row<T>]?: Row<T>[C] };

/** Extra columns to set in the same statement (e.g. `updated_at`). */
export type SetColumns<T extends TableName> = { [C in keyof Row<T>]?: Row<T>[C] };

export type GuardOperator = '=' | '<>' | '<' | '<=' | '>' | '>=';

// An untyped view of the query builder; the exported signatures above carry the types.
type AnyDb = Record<string, Record<string, unknown>>;
type AnyExecutor = Kysely<AnyDb>;
// biome-ignore lint/suspicious/noExplicitAny: Kysely's builders are generic in the table; the typed API is above.
type AnyQuery = any;

function untyped(executor: Executor): AnyExecutor {
  return executor as unknown as AnyExecutor;
}

function applyMatch(query: AnyQuery, match: Record<string, unknown>): AnyQuery {
  const entries = Object.entries(match).filter(([, v]) => v !== undefined);
  // An empty match would update every row of the table: that is always a bug.
  if (entries.length === 0) throw new TypeError('store primitive: match must name at least one column');
  let q = query;
  for (const [column, value] of entries) {
    q = value === null ? q.where(column, 'is', null) : q.where(column, '=', value);
  }
  return q;
}

function definedOnly(values: Record<string, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(values ?? {})) if (v !== undefined) out[k] = v;
  return out;
}

export interface ConsumeOnceOptions<T extends ConsumableTable> {
  table: T;
  match: Match<T>;
  /** The instant of use; stored as epoch milliseconds. */
  now: Date;
  /** Column set to `now`; the row is consumable while it IS NULL. Default `used_at`. */
  usedColumn?: NullableInstantColumn<T>;
  /** When given, the row is only consumable while `expiresColumn > now`. */
  expiresColumn?: ColumnOf<T, number>;
  set?: SetColumns<T>;
}

/**
 * Marks a single-use row used: `UPDATE t SET used_at = :now WHERE <match> AND used_at IS NULL
 * [AND expires_at > :now]`. True for the one caller that consumed it; false when it was
 * already used, expired, absent, or another caller won the race.
 */
export async function consumeOnce<T extends ConsumableTable>(executor: Executor, options: ConsumeOnceOptions<T>): Promise<boolean> {
  const used = (options.usedColumn ?? 'used_at') as string;
  const nowMs = options.now.getTime();
  let q: AnyQuery = untyped(executor)
    .updateTable(options.table as string)
    .set({ ...definedOnly(options.set as Record<string, unknown>), [used]: nowMs });
  q = applyMatch(q, options.match as Record<string, unknown>).where(used, 'is', null);
  if (options.expiresColumn !== undefined) q = q.where(options.expiresColumn, '>', nowMs);
  const result = await q.executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

export interface GuardedUpdateOptions<T extends TableName> {
  table: T;
  match: Match<T>;
  /** The condition the current row must meet for the write to happen, e.g. `counter = 7`. */
  guard: { column: keyof Row<T> & string; op: GuardOperator; value: string | number };
  set: SetColumns<T>;
}

/**
 * Compare-and-set: `UPDATE t SET … WHERE <match> AND <column> <op> :value`. Returns the
 * number of rows written; 0 means the guard no longer held (a concurrent writer changed the
 * row first, or it does not exist). Use it for optimistic concurrency and state machines
 * (`status = 'pending'` → `'active'`).
 */
export async function guardedUpdate<T extends TableName>(executor: Executor, options: GuardedUpdateOptions<T>): Promise<number> {
  const values = definedOnly(options.set as Record<string, unknown>);
  if (Object.keys(values).length === 0) throw new TypeError('guardedUpdate: set must name at least one column');
  let q: AnyQuery = untyped(executor).updateTable(options.table as string).set(values);
  q = applyMatch(q, options.match as Record<string, unknown>).where(options.guard.column, options.guard.op, options.guard.value);
  const result = await q.executeTakeFirst();
  return Number(result.numUpdatedRows);
}

export interface AdvanceOptions<T extends TableName> {
  table: T;
  match: Match<T>;
  /** A monotonic integer column: HOTP counter, last accepted TOTP step, signCount. */
  column: ColumnOf<T, number>;
  value: number;
  set?: SetColumns<T>;
}

/**
 * Moves a monotonic counter forward: `UPDATE t SET column = :value WHERE <match> AND column
 * < :value`. True when this caller advanced it; false when the stored value is already at
 * or past `value` — a replayed code or a stale writer, which must be rejected.
 */
export async function advanceCounter<T extends TableName>(executor: Executor, options: AdvanceOptions<T>): Promise<boolean> {
  const written = await guardedUpdate(executor, {
    table: options.table,
    match: options.match,
    guard: { column: options.column, op: '<', value: options.value },
    set: { ...options.set, [options.column]: options.value } as SetColumns<T>,
  });
  return written === 1;
}

export interface IncrementBelowOptions<T extends TableName> {
  table: T;
  match: Match<T>;
  /** An integer column: failed attempts, sends. */
  column: ColumnOf<T, number>;
  /** The increment only happens while the stored value is below this. */
  max: number;
  set?: SetColumns<T>;
}

/**
 * Charges one unit against a bound: `UPDATE t SET column = column + 1 WHERE <match> AND
 * column < :max RETURNING column`. Returns the new value, or undefined when the bound was
 * already reached (or the row is absent). Charge BEFORE comparing a secret, so that N
 * parallel guesses cost N attempts and no more than `max` are ever let through.
 */
export async function incrementBelow<T extends TableName>(executor: Executor, options: IncrementBelowOptions<T>): Promise<number | undefined> {
  const db = untyped(executor);
  const column = options.column as string;
  let q: AnyQuery = db
    .updateTable(options.table as string)
    .set((eb: AnyQuery) => ({ ...definedOnly(options.set as Record<string, unknown>), [column]: eb(column, '+', 1) }));
  q = applyMatch(q, options.match as Record<string, unknown>).where(column, '<', options.max);
  const row = (await q.returning(column).executeTakeFirst()) as Record<string, unknown> | undefined;
  return row === undefined ? undefined : Number(row[column]);
}

export interface InsertOnceOptions<T extends TableName> {
  table: T;
  /** The full row to insert. */
  values: Row<T>;
  /** The primary-key or unique column(s) whose conflict means "someone else got there first". */
  conflict: (keyof Row<T> & string)[];
}

/**
 * `INSERT … ON CONFLICT (<conflict>) DO NOTHING`: true for the one caller whose row was
 * inserted, false when the key already existed (a replayed jti, a duplicate enrolment).
 */
export async function insertOnce<T extends TableName>(executor: Executor, options: InsertOnceOptions<T>): Promise<boolean> {
  const result = await untyped(executor)
    .insertInto(options.table as string)
    .values(options.values as Record<string, unknown>)
    .onConflict((oc) => oc.columns(options.conflict).doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) === 1;
}
