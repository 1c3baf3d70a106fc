import { AsyncLocalStorage } from 'node:async_hooks';
import { closeSync, fdatasync, fsyncSync, openSync, realpathSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import {
  CompiledQuery,
  type DatabaseConnection,
  type DialectAdapter,
  type Driver,
  type QueryResult,
  RawNode,
  SelectQueryNode,
  SqliteAdapter,
  SqliteDialect,
  type SqliteDatabase,
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

/** One group commit: the writes of every caller that ran while it was open, and their waiters. */
interface Batch {
  readonly done: Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
  /** Callers (connection leases) that wrote in it or read its uncommitted state. */
  joined: number;
}

function newBatch(): Batch {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A batch nobody waits for (every caller was relaxed) must not be an unhandled rejection.
  done.catch(() => {});
  return { done, resolve, reject, joined: 0 };
}

/** FIFO lock around the one connection (Kysely's own mutex is bypassed, see the driver). */
class Lock {
  #held = false;
  readonly #queue: (() => void)[] = [];
  acquire(): Promise<void> {
    if (!this.#held) {
      this.#held = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#queue.push(resolve));
  }
  release(): void {
    const next = this.#queue.shift();
    if (next === undefined) this.#held = false;
    else next();
  }
}

const relaxedScope = new AsyncLocalStorage<true>();

/**
 * Runs `fn` with its writes exempt from waiting for their group commit: they are still
 * written in the open batch and committed with it, but the caller is answered at once. Only
 * for counters whose loss in an OS crash is harmless (rate-limit windows); never for
 * anything single-use, a factor's state or an audit record.
 */
export function withoutDurabilityWait<T>(fn: () => Promise<T>): Promise<T> {
  return relaxedScope.run(true, fn);
}

export interface GroupCommitStats {
  /** Durable group commits (one WAL fsync each). */
  flushes: number;
  /** Connection leases that were answered after a group commit. */
  waited: number;
}

const SAVEPOINT = 'stepgate_tx';

export type FdatasyncFn = (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => void;

/** The driver's own fdatasync of the WAL file, off the event loop (see the driver). */
class WalSync {
  readonly #walFile: string;
  readonly #fdatasync: FdatasyncFn;
  #fd: number | undefined;
  #inFlight = 0;
  #drained: (() => void)[] = [];

  constructor(databaseFile: string, fdatasyncFn: FdatasyncFn) {
    this.#walFile = `${databaseFile}-wal`;
    this.#fdatasync = fdatasyncFn;
  }

  sync(batch: Batch): void {
    let fd: number;
    try {
      fd = this.#open();
    } catch (err) {
      batch.reject(err);
      return;
    }
    this.#inFlight += 1;
    this.#fdatasync(fd, (err) => {
      this.#inFlight -= 1;
      if (err) batch.reject(err);
      else batch.resolve();
      if (this.#inFlight === 0) for (const done of this.#drained.splice(0)) done();
    });
  }

  drain(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drained.push(resolve));
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  /** The WAL exists from the first commit on and keeps its inode while the database is open. */
  #open(): number {
    if (this.#fd === undefined) {
      this.#fd = openSync(this.#walFile, 'r');
      // Once: the WAL's directory entry, so the file itself survives a power loss.
      const dir = openSync(dirname(this.#walFile), 'r');
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    }
    return this.#fd;
  }
}

/**
 * Group commit on the gateway's one SQLite connection. node:sqlite is synchronous: with
 * `synchronous = FULL` every COMMIT is an fsync on the event loop, and committing each
 * request's transaction on its own would bound the whole gateway by the disk's fsync rate
 * and stall every other request meanwhile. Instead:
 *
 * - The first write (or transaction) opens a batch: `BEGIN IMMEDIATE`, which takes SQLite's
 *   write lock (so other processes on the file wait on the busy timeout as before).
 * - Every Kysely transaction runs as a SAVEPOINT inside it (its ROLLBACK undoes only its own
 *   writes); an autocommit write runs in it directly.
 * - One `setImmediate` later the batch commits, once, behind whatever lease holds the
 *   connection at that moment, and only then is each caller that wrote in it answered: a
 *   caller's promise resolves after its write is durable, exactly as before, and rejects if
 *   the group commit fails (every caller in the batch then fails, none half-succeeds).
 * - Durable means on disk, not in the OS cache. In `wal-fsync` mode (the default) SQLite runs
 *   `synchronous = NORMAL`, so COMMIT only write()s the WAL frames, and the driver then
 *   fdatasync()s the WAL file itself, on the libuv pool, off the event loop; the batch's
 *   callers are answered when that returns. Every frame of the batch was written before the
 *   call, so the fdatasync covers it (fsync is per file, whichever descriptor wrote). This is
 *   exactly the sync SQLite would do at COMMIT with FULL; checkpoints still sync the WAL and
 *   the database file themselves (NORMAL does that). If the fdatasync fails the callers get
 *   the error although the commit may survive: they fail closed (a code they were told was
 *   refused may turn out burnt; never the other way round). `full` mode (SQLite's own fsync
 *   at COMMIT, on the event loop) is kept for comparison.
 * - An autocommit SELECT does not open a batch and does not wait for one. While a batch is
 *   open it sees that batch's not-yet-durable writes (the same connection): state changes
 *   that act on what they read are conditional statements (src/store/primitives.ts), which
 *   run in the same or a later batch, so none commits on top of a write that was lost.
 *
 * Kysely's connection mutex is replaced by the driver's own lock (the adapter reports
 * multiple connections) because the wait for durability must happen after the connection is
 * released, or no other caller could join the batch.
 */
class GroupCommitSqliteDriver implements Driver {
  readonly #raw: DatabaseSync;
  readonly #db: SqliteDatabase;
  readonly #lock = new Lock();
  readonly #connection: GroupCommitConnection;
  #batch: Batch | undefined;
  /** The batch the current lease wrote in (or read uncommitted state of). */
  #leaseBatch: Batch | undefined;
  #inSavepoint = false;
  /** The batch was lost in the middle of the current Kysely transaction: it must not go on. */
  #transactionLost = false;
  #destroyed = false;
  /** Stores of this process open on this file (they share this driver, see openNodeSqlite). */
  #refs = 1;
  readonly #onClose: () => void;
  readonly stats: GroupCommitStats = { flushes: 0, waited: 0 };

  readonly #walSync: WalSync | undefined;

  constructor(raw: DatabaseSync, db: SqliteDatabase, onClose: () => void, walSync: WalSync | undefined) {
    this.#raw = raw;
    this.#db = db;
    this.#onClose = onClose;
    this.#walSync = walSync;
    this.#connection = new GroupCommitConnection(this);
  }

  /** Another store in this process opened the same file: it shares this connection. */
  addRef(): void {
    this.#refs += 1;
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    if (this.#destroyed) throw new Error('driver has already been destroyed');
    await this.#lock.acquire();
    this.#leaseBatch = undefined;
    return this.#connection;
  }

  async releaseConnection(): Promise<void> {
    const batch = this.#leaseBatch;
    this.#leaseBatch = undefined;
    this.#lock.release();
    if (batch !== undefined && relaxedScope.getStore() !== true) {
      this.stats.waited += 1;
      await batch.done;
    }
  }

  async beginTransaction(): Promise<void> {
    this.#joinBatch();
    this.#exec(`savepoint ${SAVEPOINT}`);
    this.#inSavepoint = true;
  }

  async commitTransaction(): Promise<void> {
    this.#inSavepoint = false;
    if (this.#transactionLost) {
      this.#transactionLost = false;
      throw new Error('the transaction was rolled back by SQLite after an earlier error');
    }
    this.#exec(`release ${SAVEPOINT}`);
  }

  async rollbackTransaction(): Promise<void> {
    this.#inSavepoint = false;
    this.#transactionLost = false;
    // A statement error that ended the whole batch (SQLite rolls back on some errors) has
    // already failed it; there is then nothing left to roll back to.
    if (!this.#raw.isTransaction) return;
    this.#exec(`rollback to ${SAVEPOINT}`);
    this.#exec(`release ${SAVEPOINT}`);
  }

  async savepoint(_c: DatabaseConnection, name: string): Promise<void> {
    await this.#connection.executeQuery(compileSavepoint('savepoint', name));
  }

  async rollbackToSavepoint(_c: DatabaseConnection, name: string): Promise<void> {
    await this.#connection.executeQuery(compileSavepoint('rollback to', name));
  }

  async releaseSavepoint(_c: DatabaseConnection, name: string): Promise<void> {
    await this.#connection.executeQuery(compileSavepoint('release', name));
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#refs -= 1;
    if (this.#refs > 0) return;
    this.#destroyed = true;
    this.#onClose();
    await this.#lock.acquire();
    try {
      this.#flushNow();
      await this.#walSync?.drain();
    } finally {
      this.#lock.release();
      this.#db.close();
      this.#walSync?.close();
    }
  }

  /** Called by the connection for every statement, with the lock held. */
  run(compiled: CompiledQuery): QueryResult<unknown> {
    if (this.#transactionLost) throw new Error('the transaction was rolled back by SQLite after an earlier error');
    if (!this.#inSavepoint) {
      if (isRead(compiled)) return this.#execute(compiled);
      this.#joinBatch();
    } else if (this.#batch !== undefined) {
      this.#leaseBatch = this.#batch;
    }
    return this.#execute(compiled);
  }

  #execute(compiled: CompiledQuery): QueryResult<unknown> {
    try {
      const stmt = this.#db.prepare(compiled.sql);
      const parameters = compiled.parameters as unknown[];
      if (stmt.reader) return { rows: stmt.all(parameters) };
      const { changes, lastInsertRowid } = stmt.run(parameters);
      return {
        insertId: lastInsertRowid == null ? undefined : BigInt(lastInsertRowid),
        numAffectedRows: changes == null ? undefined : BigInt(changes),
        rows: [],
      };
    } catch (err) {
      this.#checkBatch(err);
      throw err;
    }
  }

  #exec(sqlText: string): void {
    try {
      this.#raw.exec(sqlText);
    } catch (err) {
      this.#checkBatch(err);
      throw err;
    }
  }

  /** Some errors (I/O, full disk, …) make SQLite roll the whole transaction back: the batch is lost. */
  #checkBatch(err: unknown): void {
    const batch = this.#batch;
    if (batch === undefined || this.#raw.isTransaction) return;
    this.#batch = undefined;
    if (this.#inSavepoint) this.#transactionLost = true;
    this.#inSavepoint = false;
    batch.reject(err);
  }

  #joinBatch(): void {
    if (this.#batch === undefined) {
      this.#raw.exec('begin immediate');
      const batch = newBatch();
      this.#batch = batch;
      setImmediate(() => {
        void this.#flush(batch);
      });
    }
    this.#batch.joined += 1;
    this.#leaseBatch = this.#batch;
  }

  async #flush(batch: Batch): Promise<void> {
    await this.#lock.acquire();
    try {
      if (this.#batch === batch) this.#flushNow();
    } finally {
      this.#lock.release();
    }
  }

  #flushNow(): void {
    const batch = this.#batch;
    if (batch === undefined) return;
    this.#batch = undefined;
    try {
      this.#raw.exec('commit');
      this.stats.flushes += 1;
      if (this.#walSync === undefined) batch.resolve();
      else this.#walSync.sync(batch);
    } catch (err) {
      // A failed COMMIT (deferred constraint, I/O error) may leave the transaction open.
      if (this.#raw.isTransaction) {
        try {
          this.#raw.exec('rollback');
        } catch {
          // nothing more can be done; the batch's callers get the commit's error
        }
      }
      batch.reject(err);
    }
  }
}

/** A plain SELECT (built, or raw SQL that starts with SELECT): it writes nothing, so it needs no commit. */
function isRead(compiled: CompiledQuery): boolean {
  if (SelectQueryNode.is(compiled.query)) return true;
  return RawNode.is(compiled.query) && /^\s*select\s/i.test(compiled.sql);
}

function compileSavepoint(command: 'savepoint' | 'rollback to' | 'release', name: string): CompiledQuery {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || name === SAVEPOINT) throw new TypeError(`invalid savepoint name ${name}`);
  return CompiledQuery.raw(`${command} "${name}"`);
}

class GroupCommitConnection implements DatabaseConnection {
  readonly #driver: GroupCommitSqliteDriver;
  constructor(driver: GroupCommitSqliteDriver) {
    this.#driver = driver;
  }
  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    return this.#driver.run(compiled) as QueryResult<R>;
  }
  // biome-ignore lint/correctness/useYield: streaming is not used; refuse it loudly.
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('streaming is not supported by the gateway SQLite driver');
  }
}

/**
 * SQLite does have transactional DDL, but Kysely's adapter says it does not, so its migrator
 * would run our migrations outside a transaction and without a lock: two processes starting
 * on a fresh file would both create the tables. Declaring it makes the migrator run every
 * pending migration inside one transaction, which holds SQLite's write lock; a second
 * process waits (busy timeout), then finds them applied. It also reports "multiple
 * connections" so that Kysely leaves the locking to the group-commit driver.
 */
class GatewaySqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
  override get supportsMultipleConnections(): boolean {
    return true;
  }
}

class NodeSqliteDialect extends SqliteDialect {
  readonly #driver: GroupCommitSqliteDriver;
  constructor(driver: GroupCommitSqliteDriver) {
    // Kysely's own driver is never created (createDriver below); the database is unused.
    super({ database: {} as SqliteDatabase });
    this.#driver = driver;
  }
  override createDriver(): Driver {
    return this.#driver;
  }
  override createAdapter(): DialectAdapter {
    return new GatewaySqliteAdapter();
  }
}

/**
 * `wal-fsync` (default): NORMAL plus the driver's own WAL fdatasync off the event loop before
 * anyone is answered; `full`: SQLite's fsync at every COMMIT, on the event loop. Both are
 * durable across a power loss; `normal` alone is not (tests and scratch files only).
 */
export type SqliteSynchronous = 'wal-fsync' | 'full' | 'normal';

export interface NodeSqliteOptions {
  file: string;
  busyTimeoutMs: number;
  /** Default `wal-fsync`: a commit is on disk before anyone is answered (see the driver). */
  synchronous?: SqliteSynchronous;
  /** Tests: replaces fs.fdatasync in `wal-fsync` mode. */
  fdatasync?: FdatasyncFn;
}

interface OpenFile {
  driver: GroupCommitSqliteDriver;
  raw: DatabaseSync;
}

/**
 * The files this process has open. A second store on the same file in the same process (two
 * gateways in one test process, the CLI's helpers) shares the first one's connection and
 * driver instead of opening another connection: node:sqlite is synchronous, so a second
 * connection waiting for the first one's write lock (held for an event-loop turn by the
 * group commit) would block the very thread that releases it. Separate processes each have
 * their own connection and SQLite's file lock between them, as before.
 */
const openFiles = new Map<string, OpenFile>();

function fileKey(file: string): string | undefined {
  if (file === ':memory:' || file === '') return undefined;
  try {
    return realpathSync(file);
  } catch {
    return resolve(file);
  }
}

export function openNodeSqlite(options: NodeSqliteOptions): { dialect: SqliteDialect; raw: DatabaseSync; stats: GroupCommitStats } {
  const key = fileKey(options.file);
  const existing = key === undefined ? undefined : openFiles.get(key);
  if (existing !== undefined) {
    existing.driver.addRef();
    return { dialect: new NodeSqliteDialect(existing.driver), raw: existing.raw, stats: existing.driver.stats };
  }
  const raw = new DatabaseSync(options.file, { enableForeignKeyConstraints: true });
  raw.exec(`PRAGMA busy_timeout = ${Math.trunc(options.busyTimeoutMs)}`);
  raw.exec('PRAGMA journal_mode = WAL');
  // Every commit is on disk before its callers are answered, so a burnt one-time code or a
  // consumed step-up stays burnt across an OS crash or power loss, not only across a process
  // crash: by the driver's WAL fdatasync (default) or SQLite's own (FULL). Group commit
  // (above) makes that one fsync per event-loop turn rather than one per request.
  const mode = options.synchronous ?? 'wal-fsync';
  raw.exec(`PRAGMA synchronous = ${mode === 'full' ? 'FULL' : 'NORMAL'}`);
  raw.exec('PRAGMA foreign_keys = ON');
  const database = adapt(raw);
  const walSync = mode === 'wal-fsync' && key !== undefined ? new WalSync(key, options.fdatasync ?? fdatasync) : undefined;
  const driver = new GroupCommitSqliteDriver(
    raw,
    database,
    () => {
      if (key !== undefined) openFiles.delete(key);
    },
    walSync,
  );
  if (key !== undefined) openFiles.set(key, { driver, raw });
  return { dialect: new NodeSqliteDialect(driver), raw, stats: driver.stats };
}
