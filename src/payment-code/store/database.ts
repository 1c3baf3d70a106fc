import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { type DatabaseIntrospector, Kysely, PostgresDialect, type PostgresDialectConfig, sql, type TableMetadata, type Transaction } from 'kysely';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import { PostgresReplayStore, type ReplayStore, systemClock, type VerifierClock } from '../../verifier/index.ts';
import { migrations } from './migrations/index.ts';
import { PcSqliteReplayStore, REPLAY_TABLE } from './replay-store.ts';
import type { PaymentCodeDatabase } from './schema.ts';
import { type GroupCommitStats, openNodeSqlite, WAL_SYNC_FAILED } from './sqlite-dialect.ts';

export type PcDb = Kysely<PaymentCodeDatabase>;
export type PcTx = Transaction<PaymentCodeDatabase>;
export type PcExecutor = PcDb | PcTx;
export type PcDialect = 'sqlite' | 'postgres';

/** The service's database: its own file or PostgreSQL schema, never the gateway's. */
export interface PaymentCodeStore {
  readonly db: PcDb;
  readonly dialect: PcDialect;
  /** File path or URL without password, for logs. */
  readonly location: string;
  /** A verifier replay store in this same database (table `pc_stepup_replay`); create one per service. */
  replayStore(clock: VerifierClock): ReplayStore;
  /** SQLite only: the WAL sync's counters (fdatasyncs, failed ones, callers that waited for one). */
  readonly commitStats?: GroupCommitStats;
  migrate(): Promise<string[]>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface OpenPaymentCodeStoreOptions {
  /** postgres:// URL; empty means SQLite at `sqliteFile`. */
  url: string;
  sqliteFile: string;
  schema?: string;
  poolMax?: number;
  /**
   * PostgreSQL: the longest one statement may run (the session's `statement_timeout`, lock
   * waits included); the client abandons a statement `QUERY_TIMEOUT_GRACE_MS` later, for a
   * server that stops answering altogether. Either way the statement fails (a 503 through
   * isPaymentCodeDatabaseUnavailable) and its transaction is rolled back. Migrations are not
   * bounded by it. Default 5000.
   */
  queryTimeoutMs?: number;
  sqliteBusyTimeoutMs?: number;
}

/** Default of `queryTimeoutMs`. */
export const DEFAULT_QUERY_TIMEOUT_MS = 5000;

/**
 * How much longer than the server's statement_timeout the client waits. The server's cancel
 * is the clean end (the connection stays usable, the error is SQLSTATE 57014); the client's
 * own timeout is the backstop for a server that does not answer at all.
 */
export const QUERY_TIMEOUT_GRACE_MS = 1000;

const INT8_OID = 20;

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparseable)';
  }
}

export async function openPaymentCodeStore(options: OpenPaymentCodeStoreOptions): Promise<PaymentCodeStore> {
  return options.url === '' ? openSqlite(options) : openPostgres(options);
}

function openSqlite(options: OpenPaymentCodeStoreOptions): PaymentCodeStore {
  if (options.sqliteFile !== ':memory:') mkdirSync(dirname(options.sqliteFile), { recursive: true });
  const { dialect, raw, stats } = openNodeSqlite({ file: options.sqliteFile, busyTimeoutMs: options.sqliteBusyTimeoutMs ?? 5000 });
  const db = new Kysely<PaymentCodeDatabase>({ dialect });
  return makeStore({
    db,
    dialect: 'sqlite',
    location: options.sqliteFile,
    ping: async () => {
      // After a failed WAL fdatasync every write is refused until restart (sqlite-dialect.ts):
      // not ready, so that a load balancer stops sending requests that can only fail.
      if (stats.failedFlushes > 0) throw new Error('a write to the SQLite file failed (WAL fdatasync): every write is refused until P is restarted');
      raw.prepare('select 1').get();
    },
    replayStore: (clock) => new PcSqliteReplayStore(db, raw, REPLAY_TABLE, clock),
    commitStats: stats,
  });
}

function newPool(options: OpenPaymentCodeStoreOptions, schema: string, max: number, statementTimeoutMs: number): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max,
    // Our integers (epoch ms, counters) fit in a double.
    types: { getTypeParser: (oid: number, format?: 'text' | 'binary') => (oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) },
    // Set at connection start-up, so every statement of every session has it, in or out of a
    // transaction, whatever issues it (Kysely, the replay store, a migration's lock wait).
    options: `-c search_path=${schema} -c statement_timeout=${statementTimeoutMs}`,
    ...(statementTimeoutMs === 0 ? {} : { query_timeout: statementTimeoutMs + QUERY_TIMEOUT_GRACE_MS }),
    connectionTimeoutMillis: 5000,
  });
  // Idle clients are covered by the pool's listener; a checked-out client that PostgreSQL
  // disconnects (restart, failover) emits 'error' on itself, which would otherwise kill P.
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    client.on('error', () => {});
  });
  return pool;
}

async function openPostgres(options: OpenPaymentCodeStoreOptions): Promise<PaymentCodeStore> {
  const schema = options.schema ?? 'public';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new TypeError(`invalid schema name ${schema}`);
  const queryTimeoutMs = options.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
  if (!Number.isSafeInteger(queryTimeoutMs) || queryTimeoutMs < 1) throw new TypeError('queryTimeoutMs must be a positive integer');
  const pool = newPool(options, schema, options.poolMax ?? 10, queryTimeoutMs);
  if (schema !== 'public') {
    const client = await pool.connect();
    try {
      await client.query(`create schema if not exists ${schema}`);
    } catch (err) {
      // Two processes may race to create the schema; the loser sees a unique violation.
      if ((err as { code?: string }).code !== '23505') throw err;
    } finally {
      client.release();
    }
  }
  const db = new Kysely<PaymentCodeDatabase>({ dialect: new SchemaScopedPostgresDialect({ pool }, schema) });
  return makeStore({
    db,
    dialect: 'postgres',
    location: redactUrl(options.url),
    schema,
    ping: async () => {
      await sql`select 1`.execute(db);
    },
    replayStore: (clock) => new PostgresReplayStore({ pool, schema, tableName: REPLAY_TABLE, clock, queryTimeoutMs }),
    // A migration may rightly take longer than a request's statement (an index on a large
    // table; another process's migration holding the lock at start-up): its own connection,
    // without the timeout, for the time it runs.
    migrationDb: () => new Kysely<PaymentCodeDatabase>({ dialect: new SchemaScopedPostgresDialect({ pool: newPool(options, schema, 1, 0) }, schema) }),
  });
}

/**
 * Kysely's PostgreSQL introspector scans every schema of the database; one dropped by someone
 * else mid-scan (other deployments, parallel tests) fails our migration. Look at ours only.
 */
class SchemaScopedPostgresDialect extends PostgresDialect {
  readonly #schema: string;

  constructor(config: PostgresDialectConfig, schema: string) {
    super(config);
    this.#schema = schema;
  }

  override createIntrospector(db: Kysely<unknown>): DatabaseIntrospector {
    const schema = this.#schema;
    return {
      async getSchemas() {
        const r = await sql<{ name: string }>`select nspname as name from pg_catalog.pg_namespace where nspname = ${schema}`.execute(db);
        return r.rows;
      },
      async getTables(): Promise<TableMetadata[]> {
        const r = await sql<{ name: string; kind: string }>`
          select c.relname as name, c.relkind as kind
          from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
          where n.nspname = ${schema} and c.relkind in ('r', 'p', 'v', 'm', 'f')`.execute(db);
        return r.rows.map((t) => ({ name: t.name, schema, isView: t.kind === 'v' || t.kind === 'm', isForeign: t.kind === 'f', columns: [] }));
      },
    };
  }
}

interface StoreParts {
  db: PcDb;
  dialect: PcDialect;
  location: string;
  schema?: string;
  ping(): Promise<void>;
  replayStore(clock: VerifierClock): ReplayStore;
  commitStats?: GroupCommitStats;
  /** The database migrations run on, when not `db` (closed after them). */
  migrationDb?: () => PcDb;
}

function makeStore(parts: StoreParts): PaymentCodeStore {
  const { db, schema } = parts;
  return {
    db,
    dialect: parts.dialect,
    location: parts.location,
    ping: parts.ping,
    replayStore: parts.replayStore,
    ...(parts.commitStats === undefined ? {} : { commitStats: parts.commitStats }),
    async migrate() {
      const migrationDb = parts.migrationDb?.() ?? db;
      let outcome: Awaited<ReturnType<Migrator['migrateToLatest']>>;
      try {
        const migrator = new Migrator({
          db: migrationDb,
          provider: { getMigrations: async () => migrations },
          migrationTableName: 'pc_migrations',
          migrationLockTableName: 'pc_migrations_lock',
          ...(schema === undefined ? {} : { migrationTableSchema: schema }),
        });
        outcome = await migrator.migrateToLatest();
      } finally {
        if (migrationDb !== db) await migrationDb.destroy();
      }
      const { error, results } = outcome;
      if (error !== undefined) throw error;
      const replay = parts.replayStore(systemClock);
      // Create the replay table now: fail at start-up rather than on the first payment.
      if (replay instanceof PostgresReplayStore) await replay.init();
      return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
    },
    async close() {
      await db.destroy();
    },
  };
}

const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', '08000', '08001', '08003', '08004', '08006', '57P01', '57P02', '57P03', '53300', '25006',
  // PostgreSQL: query_canceled, i.e. statement_timeout (queryTimeoutMs) ended the statement
  '57014',
  // SQLite: a commit could not be made durable (a failed WAL fdatasync: writes refused until restart, /readyz 503)
  WAL_SYNC_FAILED,
]);
// `Query read timeout`: pg's client-side query_timeout, the backstop behind statement_timeout.
const UNAVAILABLE_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|not queryable|Connection ended|database is locked|Client was closed|Query read timeout/i;

/** Whether an error means "P's database cannot be reached right now": 503 with Retry-After, not a 500. */
export function isPaymentCodeDatabaseUnavailable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth += 1) {
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) return true;
    if (typeof message === 'string' && UNAVAILABLE_MESSAGES.test(message)) return true;
  }
  return false;
}
