import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type DatabaseIntrospector, Kysely, PostgresDialect, type PostgresDialectConfig, sql, type TableMetadata, type Transaction } from 'kysely';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import { migrations } from './migrations/index.ts';
import { useNamedStatements } from './pg-named-statements.ts';
import { type FdatasyncFn, type GroupCommitStats, openNodeSqlite, WAL_SYNC_FAILED } from './node-sqlite-dialect.ts';
import type { Database } from './schema.ts';

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;
/** Something queries can run on: the database or an open transaction. */
export type Executor = Kysely<Database> | Transaction<Database>;
export type DialectName = 'sqlite' | 'postgres';

export interface Store {
  readonly db: Db;
  readonly dialect: DialectName;
  /** Human-readable location (file path or URL without password) for logs. */
  readonly location: string;
  /** SQLite only: how many group WAL fsyncs were made, and how many callers waited for one. */
  readonly commitStats?: GroupCommitStats;
  migrate(): Promise<string[]>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface OpenStoreOptions {
  /** postgres:// URL; empty means SQLite at `sqliteFile`. */
  url: string;
  sqliteFile: string;
  schema?: string;
  poolMax?: number;
  /** PostgreSQL: run FixedSql's texts as named prepared statements (default true; pg-named-statements.ts). */
  preparedStatements?: boolean;
  sqliteBusyTimeoutMs?: number;
  /** Tests: replaces fs.fdatasync of the SQLite WAL (a failing disk). */
  sqliteFdatasync?: FdatasyncFn;
}

const INT8_OID = 20;
const NUMERIC_OID = 1700;

/** A database URL without its password, for logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparseable)';
  }
}

export async function openStore(options: OpenStoreOptions): Promise<Store> {
  if (options.url !== '') return openPostgres(options);
  return openSqlite(options);
}

/**
 * The data directory and the database hold password hashes and sealed secrets: a directory
 * we create is 0700 and a database file we create is 0600 (SQLite gives its -wal and -shm
 * files the database file's mode). Existing ones keep the mode the operator gave them.
 */
function createPrivateFile(file: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  try {
    closeSync(openSync(file, 'wx', 0o600));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

async function openSqlite(options: OpenStoreOptions): Promise<Store> {
  if (options.sqliteFile !== ':memory:') createPrivateFile(options.sqliteFile);
  const { dialect, raw, stats } = openNodeSqlite({ file: options.sqliteFile, busyTimeoutMs: options.sqliteBusyTimeoutMs ?? 5000, ...(options.sqliteFdatasync === undefined ? {} : { fdatasync: options.sqliteFdatasync }) });
  // No plugins and no query log on this instance: FixedSql's statements bypass both (attachDirectPath).
  const db = new Kysely<Database>({ dialect });
  dialect.attachDirectPath(db);
  const store = makeStore(db, 'sqlite', options.sqliteFile, async () => {
    raw.prepare('select 1').get();
  });
  return { ...store, commitStats: stats };
}

async function openPostgres(options: OpenStoreOptions): Promise<Store> {
  const schema = options.schema ?? 'public';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new TypeError(`invalid schema name ${schema}`);
  const types = {
    getTypeParser(oid: number, format?: 'text' | 'binary') {
      // Our integers (epoch ms, counters, COUNT(*)) fit in a double; parse them as numbers.
      if (oid === INT8_OID) return (v: string) => Number(v);
      if (oid === NUMERIC_OID) return (v: string) => v;
      return pg.types.getTypeParser(oid, format);
    },
  };
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolMax ?? 10,
    types,
    options: `-c search_path=${schema}`,
    connectionTimeoutMillis: 5000,
  });
  // A broken connection must not crash the process; the next query reports the error. The
  // pool's listener covers idle clients only: a client checked out between two statements of
  // a transaction gets PostgreSQL's "terminating connection" (a restart, a failover) as an
  // 'error' event with nobody listening, which would kill the gateway (found by the chaos
  // test that restarts PostgreSQL mid-load).
  pool.on('error', () => {});
  const named = options.preparedStatements ?? true;
  pool.on('connect', (client) => {
    client.on('error', () => {});
    if (named) useNamedStatements(client);
  });
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
  const db = new Kysely<Database>({ dialect: new SchemaScopedPostgresDialect({ pool }, schema) });
  return makeStore(
    db,
    'postgres',
    redactUrl(options.url),
    async () => {
      await sql`select 1`.execute(db);
    },
    schema,
  );
}

/**
 * Kysely's PostgreSQL introspector (which the migrator uses to see whether its tables exist)
 * scans every schema in the database and calls has_schema_privilege() on each name; a schema
 * dropped by someone else between the scan and the call makes our migration fail with
 * "schema does not exist". Several deployments (and parallel test files) share a database,
 * so the introspector looks only at our own schema.
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

function makeStore(db: Db, dialect: DialectName, location: string, ping: () => Promise<void>, schema?: string): Store {
  return {
    db,
    dialect,
    location,
    ping,
    async migrate() {
      const migrator = new Migrator({
        db,
        provider: { getMigrations: async () => migrations },
        migrationTableName: 'stepgate_migrations',
        migrationLockTableName: 'stepgate_migrations_lock',
        // Migration numbers are ranges per feature (see migrations/index.ts), so a feature that
        // lands later may carry a lower number than one already applied: it is applied then.
        // Migrations never depend on one with a higher number.
        allowUnorderedMigrations: true,
        // Kysely looks for its tables across all schemas unless told which one; with several
        // schemas in one database (tests, several deployments) it must be ours.
        ...(schema === undefined ? {} : { migrationTableSchema: schema }),
      });
      const { error, results } = await migrator.migrateToLatest();
      if (error !== undefined) throw error;
      return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
    },
    async close() {
      await db.destroy();
    },
  };
}

export function sqliteFileFor(dataDir: string): string {
  return join(dataDir, 'stepgate.sqlite');
}

const UNAVAILABLE_CODES = new Set([
  // node:net
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  // PostgreSQL: connection exceptions, shutting down / starting up / crashed, too many connections, read-only standby
  '08000', '08001', '08003', '08004', '08006', '57P01', '57P02', '57P03', '53300', '25006',
  // SQLite: a commit could not be made durable (failed WAL fdatasync: writes refused until restart, /readyz 503)
  WAL_SYNC_FAILED,
]);
const UNAVAILABLE_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|not queryable|Connection ended|database is locked|Client was closed/i;

/**
 * Whether an error means "the database cannot be reached right now" (down, restarting,
 * failing over, out of connections) rather than a bug: such a request is refused with 503
 * and Retry-After, and the next one may succeed without restarting anything — or, after a
 * failed SQLite WAL fdatasync, on another instance (this one refuses writes until it is
 * restarted and says so on /readyz, so a load balancer takes it out).
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth += 1) {
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) return true;
    if (typeof message === 'string' && UNAVAILABLE_MESSAGES.test(message)) return true;
  }
  return false;
}
