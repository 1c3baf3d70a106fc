import { DatabaseSync } from 'node:sqlite';
import {
  CompiledQuery,
  type DialectAdapter,
  SqliteAdapter,
  type DatabaseConnection,
  type Driver,
  SqliteDialect,
  type SqliteDatabase,
  SqliteDriver,
  type SqliteStatement,
} from 'kysely';

/**
 * Kysely's SqliteDialect expects better-sqlite3's shape. node:sqlite differs in two ways
 * that fail silently if ignored: statements have no `reader` flag (Kysely would `run()` a
 * SELECT and return no rows) and parameters are spread, not passed as one array.
 */
function adapt(db: DatabaseSync): SqliteDatabase {
  // Kysely prepares every query anew; preparing is a large share of a short query's cost, and
  // our queries come from a small, fixed set of shapes, so prepared statements are reused.
  const cache = new Map<string, { stmt: ReturnType<DatabaseSync['prepare']>; reader: boolean }>();
  const MAX_CACHED = 500;
  return {
    close: () => db.close(),
    prepare(sql: string): SqliteStatement {
      let entry = cache.get(sql);
      if (entry === undefined) {
        const stmt = db.prepare(sql);
        entry = { stmt, reader: stmt.columns().length > 0 };
        if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value as string);
        cache.set(sql, entry);
      }
      const { stmt, reader } = entry;
      return {
        reader,
        all: (parameters) => stmt.all(...(parameters as never[])) as unknown[],
        run: (parameters) => {
          const r = stmt.run(...(parameters as never[]));
          return { changes: r.changes, lastInsertRowid: r.lastInsertRowid };
        },
        iterate: (parameters) => stmt.iterate(...(parameters as never[])) as IterableIterator<unknown>,
      };
    },
  };
}

/**
 * Write transactions take the database lock up front (`BEGIN IMMEDIATE`): a deferred
 * transaction that later upgrades to a writer can fail with SQLITE_BUSY at once, which the
 * busy timeout does not cover, when another process writes at the same moment.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

/**
 * SQLite does have transactional DDL, but Kysely's adapter says it does not, so its migrator
 * would run our migrations outside a transaction and without a lock: two processes starting
 * on a fresh file would both create the tables. Declaring it makes the migrator run every
 * pending migration inside one `BEGIN IMMEDIATE` transaction, which holds SQLite's write lock;
 * a second process waits (busy timeout), then finds them applied.
 */
class TransactionalDdlSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}

class NodeSqliteDialect extends SqliteDialect {
  readonly #database: SqliteDatabase;
  constructor(database: SqliteDatabase) {
    super({ database });
    this.#database = database;
  }
  override createDriver(): Driver {
    return new ImmediateSqliteDriver({ database: this.#database });
  }
  override createAdapter(): DialectAdapter {
    return new TransactionalDdlSqliteAdapter();
  }
}

export interface NodeSqliteOptions {
  file: string;
  busyTimeoutMs: number;
}

export function openNodeSqlite(options: NodeSqliteOptions): { dialect: SqliteDialect; raw: DatabaseSync } {
  const raw = new DatabaseSync(options.file, { enableForeignKeyConstraints: true });
  raw.exec(`PRAGMA busy_timeout = ${Math.trunc(options.busyTimeoutMs)}`);
  raw.exec('PRAGMA journal_mode = WAL');
  // NORMAL in WAL mode is durable across application crashes (kill -9); only an OS crash
  // can lose the last transactions.
  raw.exec('PRAGMA synchronous = NORMAL');
  raw.exec('PRAGMA foreign_keys = ON');
  return { dialect: new NodeSqliteDialect(adapt(raw)), raw };
}
