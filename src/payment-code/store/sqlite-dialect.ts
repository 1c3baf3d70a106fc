import { DatabaseSync } from 'node:sqlite';
import {
  CompiledQuery,
  type DatabaseConnection,
  type DialectAdapter,
  type Driver,
  SqliteAdapter,
  type SqliteDatabase,
  SqliteDialect,
  SqliteDriver,
  type SqliteStatement,
} from 'kysely';

// This service imports nothing from the gateway, so it carries its own small adapter of
// node:sqlite to Kysely (the gateway has an equivalent one in src/store/).

/**
 * Kysely's SqliteDialect expects better-sqlite3's shape. node:sqlite statements have no
 * `reader` flag (Kysely would `run()` a SELECT and return no rows) and take spread parameters.
 */
function adapt(db: DatabaseSync): SqliteDatabase {
  // Kysely prepares every query anew, and preparing costs more than running these short
  // statements; they come from a small fixed set of shapes, so prepared statements are kept.
  const cache = new Map<string, { stmt: ReturnType<DatabaseSync['prepare']>; reader: boolean }>();
  const MAX_CACHED = 300;
  return {
    close: () => db.close(),
    prepare(sql: string): SqliteStatement {
      let entry = cache.get(sql);
      if (entry === undefined) {
        const prepared = db.prepare(sql);
        entry = { stmt: prepared, reader: prepared.columns().length > 0 };
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

/** Write transactions take the lock up front: a deferred one that upgrades later can fail with SQLITE_BUSY at once. */
class ImmediateSqliteDriver extends SqliteDriver {
  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }
}

/** Lets the migrator run inside one BEGIN IMMEDIATE transaction, so two processes starting at once do not both migrate. */
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

export function openNodeSqlite(file: string, busyTimeoutMs: number): { dialect: SqliteDialect; raw: DatabaseSync } {
  const raw = new DatabaseSync(file, { enableForeignKeyConstraints: true });
  raw.exec(`PRAGMA busy_timeout = ${Math.trunc(busyTimeoutMs)}`);
  raw.exec('PRAGMA journal_mode = WAL');
  // FULL, not NORMAL: a redeemed code or a consumed token must survive an OS crash too, or it
  // could be redeemed again after a restart.
  raw.exec('PRAGMA synchronous = FULL');
  raw.exec('PRAGMA foreign_keys = ON');
  return { dialect: new NodeSqliteDialect(adapt(raw)), raw };
}
