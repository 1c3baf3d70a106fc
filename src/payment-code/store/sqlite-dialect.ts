import { DatabaseSync } from 'node:sqlite';
import {
  CompiledQuery,
  type DatabaseConnection,
  type DialectAdapter,
  type Driver,
  type QueryResult,
  SelectQueryNode,
  SqliteAdapter,
  type SqliteDatabase,
  SqliteDialect,
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

/**
 * Group commit. The file is `synchronous = FULL`, so every commit is an fsync, and node:sqlite
 * does it on the event loop. The writes of one event-loop turn therefore share one
 * transaction: the first write of a turn opens it (BEGIN IMMEDIATE: the write lock, also
 * against other processes), each logical transaction of Kysely runs inside it as a
 * savepoint (its rollback undoes only its own work), and at the end of the turn one COMMIT
 * makes all of them durable at once. Nobody who wrote is answered before that COMMIT: the
 * connection is handed on at once (so others can join the batch), but the caller's query or
 * transaction resolves only after the commit, and rejects when it fails — every caller of
 * the batch, whichever statement broke it. Single-use stays what it was: each consuming
 * statement is conditional, and SQLite runs them one after another on this connection.
 *
 * Reads do not wait. One that runs while a batch is open sees the batch's writes before they
 * are durable; the only way a client can act on such a row is through an answer, and
 * answers wait for the commit, so what a read may see early is a refusal at worst (a code
 * another request is redeeming right now), never a success.
 */
export interface GroupCommitStats {
  /** Batches committed (one fsync each). */
  commits: number;
  /** Batches that failed to commit (every caller in them got the error). */
  failedCommits: number;
  /** Writes (logical transactions and single write statements) that joined a batch. */
  writes: number;
}

interface Batch {
  done: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
  failure?: unknown;
}

const SAVEPOINT = 'pc_batch_tx';

function savepointName(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(name) || name === SAVEPOINT) throw new TypeError(`invalid savepoint name ${name}`);
  return name;
}

class GroupCommitter {
  readonly #db: DatabaseSync;
  readonly stats: GroupCommitStats = { commits: 0, failedCommits: 0, writes: 0 };
  #batch: Batch | undefined;
  #locked = false;
  #waiting: (() => void)[] = [];
  #flushWanted = false;

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  // The connection is one: one user at a time (what Kysely's own mutex would do, but
  // released before the caller waits for its commit, so the next one can join the batch).
  async lock(): Promise<void> {
    if (!this.#locked) {
      this.#locked = true;
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  unlock(): void {
    this.#locked = false;
    // Between two users the connection holds no half-done transaction: a commit that came
    // due while it was busy happens now, before the next user starts.
    if (this.#flushWanted) this.flush();
    const next = this.#waiting.shift();
    if (next !== undefined) {
      this.#locked = true;
      next();
    }
  }

  /** Joins the current batch (opening one), and returns what the caller must wait for. */
  enlist(): Promise<void> {
    let batch = this.#batch;
    if (batch !== undefined && !this.#db.isTransaction) {
      // SQLite ended the transaction by itself (an I/O error, a full disk): whoever joined
      // it lost their writes, so they must hear so, and this write needs a new batch.
      this.#fail(batch, batch.failure ?? new Error('the SQLite transaction of this batch was rolled back'));
      batch = undefined;
    }
    if (batch === undefined) {
      this.#db.exec('BEGIN IMMEDIATE');
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      // A batch nobody waits for (every writer rolled back) must not be an unhandled rejection.
      done.catch(() => {});
      batch = { done, resolve, reject };
      this.#batch = batch;
      setImmediate(() => this.flush());
    }
    this.stats.writes += 1;
    return batch.done;
  }

  /** Commits the open batch, unless someone is using the connection (then when they let go). */
  flush(): void {
    const batch = this.#batch;
    if (batch === undefined) return;
    if (this.#locked) {
      this.#flushWanted = true;
      return;
    }
    this.#flushWanted = false;
    this.#batch = undefined;
    try {
      this.#db.exec('COMMIT');
    } catch (err) {
      this.#fail(batch, err);
      return;
    }
    this.stats.commits += 1;
    batch.resolve();
  }

  /** The connection is closing: commit what is complete, refuse what is not. */
  close(): void {
    const batch = this.#batch;
    if (batch === undefined) return;
    if (this.#locked) this.#fail(batch, new Error('the database was closed while a transaction was under way'));
    else this.flush();
  }

  #fail(batch: Batch, err: unknown): void {
    if (this.#batch === batch) this.#batch = undefined;
    try {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
    } catch {
      // Already ended by SQLite.
    }
    this.stats.failedCommits += 1;
    batch.reject(err);
  }
}

class GroupCommitConnection implements DatabaseConnection {
  readonly #db: SqliteDatabase;
  readonly #committer: GroupCommitter;
  /** The commit this connection's current user waits for before it is answered. */
  pending: Promise<void> | undefined;
  inTransaction = false;

  constructor(db: SqliteDatabase, committer: GroupCommitter) {
    this.#db = db;
    this.#committer = committer;
  }

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    // A statement outside a transaction that may write joins the batch too.
    if (!this.inTransaction && this.pending === undefined && !SelectQueryNode.is(compiledQuery.query)) this.pending = this.#committer.enlist();
    const { sql, parameters } = compiledQuery;
    const stmt = this.#db.prepare(sql);
    if (stmt.reader) return { rows: stmt.all(parameters) as R[] };
    const { changes, lastInsertRowid } = stmt.run(parameters);
    return {
      insertId: lastInsertRowid != null ? BigInt(lastInsertRowid) : undefined,
      numAffectedRows: changes != null ? BigInt(changes) : undefined,
      rows: [],
    };
  }

  // biome-ignore lint/correctness/useYield: streaming is not offered (Kysely's SQLite driver does it; nothing here uses it)
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('streaming queries are not supported by this driver');
  }
}

class GroupCommitSqliteDriver implements Driver {
  readonly #connection: GroupCommitConnection;
  readonly #committer: GroupCommitter;
  readonly #raw: DatabaseSync;

  constructor(raw: DatabaseSync, db: SqliteDatabase, committer: GroupCommitter) {
    this.#raw = raw;
    this.#committer = committer;
    this.#connection = new GroupCommitConnection(db, committer);
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    await this.#committer.lock();
    return this.#connection;
  }

  async beginTransaction(): Promise<void> {
    const pending = this.#committer.enlist();
    this.#raw.exec(`SAVEPOINT ${SAVEPOINT}`);
    this.#connection.inTransaction = true;
    this.#connection.pending = pending;
  }

  async commitTransaction(): Promise<void> {
    // Into the batch; durable at its COMMIT, which the caller waits for in releaseConnection.
    this.#raw.exec(`RELEASE ${SAVEPOINT}`);
    this.#connection.inTransaction = false;
  }

  async rollbackTransaction(): Promise<void> {
    this.#connection.inTransaction = false;
    // Nothing of this transaction is left to wait for; its caller hears its own error.
    this.#connection.pending = undefined;
    if (!this.#raw.isTransaction) return;
    this.#raw.exec(`ROLLBACK TO ${SAVEPOINT}`);
    this.#raw.exec(`RELEASE ${SAVEPOINT}`);
  }

  // Kysely's savepoints inside a transaction (nothing in P uses them today).
  async savepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`savepoint ${savepointName(name)}`));
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`rollback to ${savepointName(name)}`));
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw(`release ${savepointName(name)}`));
  }

  async releaseConnection(): Promise<void> {
    const pending = this.#connection.pending;
    this.#connection.pending = undefined;
    this.#connection.inTransaction = false;
    this.#committer.unlock();
    if (pending !== undefined) await pending;
  }

  async destroy(): Promise<void> {
    // Writes still waiting for their turn are committed (and answered) first; a batch with a
    // transaction still under way is refused instead (never half of it committed).
    if (this.#raw.isOpen) this.#committer.close();
    if (this.#raw.isOpen) this.#raw.close();
  }
}

/**
 * Lets the migrator run inside one transaction (BEGIN IMMEDIATE), so two processes starting
 * at once do not both migrate. One connection, serialised by the driver itself.
 */
class GroupCommitSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
  // The driver serialises its one connection itself: Kysely's mutex would be held while a
  // caller waits for its commit, and nobody could join the batch.
  override get supportsMultipleConnections(): boolean {
    return true;
  }
}

class NodeSqliteDialect extends SqliteDialect {
  readonly #driver: Driver;
  constructor(raw: DatabaseSync, database: SqliteDatabase, committer: GroupCommitter) {
    super({ database });
    this.#driver = new GroupCommitSqliteDriver(raw, database, committer);
  }
  override createDriver(): Driver {
    return this.#driver;
  }
  override createAdapter(): DialectAdapter {
    return new GroupCommitSqliteAdapter();
  }
}

export function openNodeSqlite(file: string, busyTimeoutMs: number): { dialect: SqliteDialect; raw: DatabaseSync; stats: GroupCommitStats } {
  const raw = new DatabaseSync(file, { enableForeignKeyConstraints: true });
  raw.exec(`PRAGMA busy_timeout = ${Math.trunc(busyTimeoutMs)}`);
  raw.exec('PRAGMA journal_mode = WAL');
  // FULL, not NORMAL: a redeemed code or a consumed token must survive an OS crash too, or it
  // could be redeemed again after a restart.
  raw.exec('PRAGMA synchronous = FULL');
  raw.exec('PRAGMA foreign_keys = ON');
  const committer = new GroupCommitter(raw);
  return { dialect: new NodeSqliteDialect(raw, adapt(raw), committer), raw, stats: committer.stats };
}
