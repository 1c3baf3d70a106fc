import { AsyncLocalStorage } from 'node:async_hooks';
import { closeSync, fdatasync, fsyncSync, openSync, realpathSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Worker } from 'node:worker_threads';
import {
  type CompiledQuery,
  type DatabaseConnection,
  type Kysely,
  type QueryExecutor,
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
  const cache = new Map<string, SqliteStatement>();
  const MAX_CACHED = 500;
  return {
    close: () => db.close(),
    prepare(sql: string): SqliteStatement {
      let entry = cache.get(sql);
      if (entry === undefined) {
        const stmt = db.prepare(sql);
        entry = {
          reader: stmt.columns().length > 0,
          all: (parameters) => stmt.all(...(parameters as never[])) as unknown[],
          run: (parameters) => {
            const r = stmt.run(...(parameters as never[]));
            return { changes: r.changes, lastInsertRowid: r.lastInsertRowid };
          },
          iterate: (parameters) => stmt.iterate(...(parameters as never[])) as IterableIterator<unknown>,
        };
        if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value as string);
        cache.set(sql, entry);
      }
      return entry;
    },
  };
}

interface Deferred {
  readonly done: Promise<void>;
  resolve(): void;
  reject(err: unknown): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A sync nobody waits for (only relaxed writers) must not be an unhandled rejection.
  done.catch(() => {});
  return { done, resolve, reject };
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
 * Runs `fn` with its writes exempt from waiting for the WAL sync: they are committed as
 * always, and made durable by the next sync, but the caller is answered at once. Only for
 * counters whose loss in an OS crash is harmless (rate-limit windows); never for anything
 * single-use, a factor's state or an audit record.
 */
export function withoutDurabilityWait<T>(fn: () => Promise<T>): Promise<T> {
  return relaxedScope.run(true, fn);
}

export interface GroupCommitStats {
  /** WAL fdatasyncs made (each makes every commit before it durable). */
  flushes: number;
  /** Database calls that were answered only after such a sync. */
  waited: number;
  /** WAL checkpoints run by the checkpointer thread (off the event loop). */
  checkpoints: number;
  /** WAL fdatasyncs that failed (their callers, and every later writer, were refused). */
  failedFlushes: number;
}

export type FdatasyncFn = (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => void;

/** The `code` of a WalSyncError. */
export const WAL_SYNC_FAILED = 'STEPGATE_WAL_SYNC_FAILED';

/**
 * A committed write that could not be made durable: its WAL fdatasync failed (and every later
 * write is refused until restart), or the WAL file could not be opened to sync it (transient,
 * e.g. EMFILE). The store cannot take writes: the caller answers 503, not 500
 * (isDatabaseUnavailable, src/store/database.ts). The system error is the cause.
 */
export class WalSyncError extends Error {
  readonly code = WAL_SYNC_FAILED;
  constructor(what: string, cause: unknown) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    super(`${what}: ${detail}`, { cause });
    this.name = 'WalSyncError';
  }
}

/**
 * Group fsync of the WAL, off the event loop: every caller that committed during one
 * event-loop turn waits for one fdatasync started after its commit (see the driver).
 *
 * Once an fdatasync has failed, every later `durable()` fails with the same error until the
 * store is reopened (the process restarted; /readyz says not ready meanwhile). After a write
 * error the kernel may have dropped the dirty pages and reports the error once, so a later
 * fdatasync can succeed while frames of the WAL before it are gone; WAL recovery stops at the
 * first bad frame, so a commit "synced" after that could still be lost — a burnt code could
 * come back. Refusing is the only answer that stays true (PostgreSQL stops for the same reason).
 * The payment-code service's driver does the same.
 */
class WalSync {
  readonly #walFile: string;
  readonly #fdatasync: FdatasyncFn;
  readonly #stats: GroupCommitStats;
  #fd: number | undefined;
  /** The sync the next callers wait for; it starts at the next setImmediate. */
  #next: Deferred | undefined;
  #inFlight = 0;
  #drained: (() => void)[] = [];
  #broken: unknown;

  constructor(databaseFile: string, fdatasyncFn: FdatasyncFn, stats: GroupCommitStats) {
    this.#walFile = `${databaseFile}-wal`;
    this.#fdatasync = fdatasyncFn;
    this.#stats = stats;
  }

  /** Resolves once a WAL fdatasync that started after this call has returned. */
  durable(): Promise<void> {
    if (this.#broken !== undefined) return Promise.reject(this.#broken);
    if (this.#next === undefined) {
      const next = deferred();
      this.#next = next;
      setImmediate(() => this.#start(next));
    }
    return this.#next.done;
  }

  #start(next: Deferred): void {
    if (this.#next === next) this.#next = undefined;
    if (this.#broken !== undefined) {
      next.reject(this.#broken);
      return;
    }
    let fd: number | undefined;
    try {
      fd = this.#open();
    } catch (err) {
      next.reject(new WalSyncError('the SQLite WAL could not be opened to sync it', err));
      return;
    }
    // No WAL yet: nothing was ever written to it (a commit always writes its frames there).
    if (fd === undefined) {
      next.resolve();
      return;
    }
    this.#inFlight += 1;
    this.#stats.flushes += 1;
    this.#fdatasync(fd, (err) => {
      this.#inFlight -= 1;
      if (err) {
        this.#stats.failedFlushes += 1;
        this.#broken ??= new WalSyncError('the SQLite WAL fdatasync failed; every write is refused until the process restarts', err);
        next.reject(this.#broken);
      } else next.resolve();
      if (this.#inFlight === 0 && this.#next === undefined) for (const done of this.#drained.splice(0)) done();
    });
  }

  /** Waits for every sync asked for or in flight. */
  async drain(): Promise<void> {
    if (this.#next !== undefined) await this.#next.done.catch(() => {});
    if (this.#inFlight === 0) return;
    await new Promise<void>((resolve) => this.#drained.push(resolve));
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  /** The WAL exists from the first commit on and keeps its inode while the database is open. */
  #open(): number | undefined {
    if (this.#fd === undefined) {
      try {
        this.#fd = openSync(this.#walFile, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
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

/** The checkpointer thread (CommonJS, evaluated: it needs nothing but node:sqlite). */
const CHECKPOINTER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { DatabaseSync } = require('node:sqlite');
const db = new DatabaseSync(workerData.file);
// Never wait for a lock: a checkpoint that cannot run now runs at the next request. The
// connection keeps SQLite's default synchronous = FULL: the checkpoint syncs the WAL before
// it copies pages and the database file after.
db.exec('PRAGMA busy_timeout = 0');
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
parentPort.on('message', (message) => {
  if (message === 'close') {
    db.close();
    parentPort.close();
    return;
  }
  let result;
  try {
    result = { ok: true, row: checkpoint.get() };
  } catch (err) {
    result = { ok: false, error: String(err) };
  }
  parentPort.postMessage(result);
});
`;

/** Committed writes between two checkpoint requests (a commit writes a few pages to the WAL). */
const CHECKPOINT_EVERY_COMMITS = 64;
/**
 * SQLite's automatic checkpoint (on the event loop) still runs when the WAL holds this many
 * pages: under steady writes the thread's checkpoint seldom ends at a moment when no frame has
 * been appended since, which the WAL needs to start again from its beginning, so this one does
 * that, cheaply (the thread has copied nearly every page), and it bounds the WAL (16 MB of
 * 4 KB pages) should the thread fail.
 */
const FALLBACK_AUTOCHECKPOINT_PAGES = 4000;

/**
 * Runs WAL checkpoints in a worker thread with its own connection, so that their page copying
 * and their two fsyncs do not stall the event loop inside some request's COMMIT (SQLite's
 * automatic checkpoint, every 1,000 pages: ~3 ms each on the bench machine, ~58 µs per token
 * request averaged). A PASSIVE checkpoint takes no lock that writers or readers wait for; its
 * correctness and durability are SQLite's own. If the thread fails, SQLite's automatic
 * checkpoint (at FALLBACK_AUTOCHECKPOINT_PAGES) keeps the WAL bounded. The same design as the
 * payment-code service's driver (src/payment-code/store/sqlite-dialect.ts), which may not
 * import this module (P is a separate product).
 */
class Checkpointer {
  readonly #file: string;
  readonly #stats: GroupCommitStats;
  /** Started at the first checkpoint (a store that writes little never needs one). */
  #worker: Worker | undefined;
  #commits = 0;
  #inFlight = false;
  #dead = false;

  constructor(databaseFile: string, stats: GroupCommitStats) {
    this.#file = databaseFile;
    this.#stats = stats;
  }

  /** A write was committed; every CHECKPOINT_EVERY_COMMITS, one checkpoint is asked for. */
  committed(): void {
    this.#commits += 1;
    if (this.#commits < CHECKPOINT_EVERY_COMMITS || this.#inFlight || this.#dead) return;
    this.#commits = 0;
    this.#inFlight = true;
    try {
      this.#start().postMessage('checkpoint');
    } catch {
      // No thread (out of resources): SQLite's own checkpoint keeps the WAL bounded. This runs
      // after a commit; it must never turn that commit's answer into an error.
      this.#dead = true;
    }
  }

  #start(): Worker {
    if (this.#worker !== undefined) return this.#worker;
    const worker = new Worker(CHECKPOINTER_SOURCE, { eval: true, workerData: { file: this.#file } });
    // It must not keep the process alive, nor take it down.
    worker.unref();
    worker.on('message', (result: { ok: boolean }) => {
      this.#inFlight = false;
      if (result.ok) this.#stats.checkpoints += 1;
    });
    worker.on('error', () => {
      this.#dead = true;
    });
    worker.on('exit', () => {
      this.#dead = true;
    });
    this.#worker = worker;
    return worker;
  }

  async close(): Promise<void> {
    const worker = this.#worker;
    const running = !this.#dead;
    this.#dead = true;
    if (worker === undefined || !running) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    // Its connection closes first (a checkpoint under way finishes), then the thread ends;
    // until then it keeps the process alive (whoever closes the store awaits this).
    worker.ref();
    worker.postMessage('close');
    await exited;
  }
}

/**
 * Durable commits without an fsync per request on the event loop. node:sqlite is
 * synchronous: with `synchronous = FULL` every COMMIT is an fsync on the event loop, which
 * bounds the whole gateway by the disk's fsync rate and stalls every other request meanwhile.
 * Instead, in `wal-fsync` mode (the default):
 *
 * - SQLite runs `synchronous = NORMAL` in WAL mode: a COMMIT appends its frames to the WAL
 *   with write() and returns; the write lock is released at once, as before (transactions
 *   are not merged, so one that fails fails alone, and another process waits no longer).
 * - A caller that committed a write (a transaction, or an autocommitted INSERT/UPDATE/
 *   DELETE) is answered only after an fdatasync() of the WAL file that started after its
 *   COMMIT has returned. That is exactly the sync SQLite itself does at COMMIT with FULL; it
 *   runs on the libuv pool, off the event loop, and every commit of one event-loop turn
 *   shares one (group fsync). Checkpoints sync the WAL and the database file themselves
 *   (NORMAL does that). fsync is per file, whichever descriptor wrote.
 * - If the fdatasync fails its callers get the error although their commits may survive:
 *   they fail closed (a code they were told was refused may turn out burnt; never the other
 *   way round).
 * - A SELECT never waits.
 *
 * Kysely's connection mutex is replaced by the driver's own lock (the adapter reports
 * multiple connections) because the wait for the sync must happen after the connection is
 * released, or every other caller would queue behind the fsync. `full` mode (SQLite's own
 * fsync at COMMIT, on the event loop) is kept for comparison.
 */
class GroupCommitSqliteDriver implements Driver {
  readonly #raw: DatabaseSync;
  readonly #db: SqliteDatabase;
  readonly #lock = new Lock();
  readonly #connection: GroupCommitConnection;
  /** The current lease committed a write. */
  #leaseWrote = false;
  /** Numbers the leases (acquireConnection to releaseConnection), for the direct path. */
  #lease = 0;
  /** The lease whose transaction is open (begun, not yet committed or rolled back); 0: none. */
  #txLease = 0;
  /** The open transaction ran a statement that may write (anything but a SELECT). */
  #txWrote = false;
  #destroyed = false;
  /** Stores of this process open on this file (they share this driver, see openNodeSqlite). */
  #refs = 1;
  readonly #onClose: () => void;
  readonly #walSync: WalSync | undefined;
  readonly #checkpointer: Checkpointer | undefined;
  readonly stats: GroupCommitStats;

  constructor(raw: DatabaseSync, db: SqliteDatabase, onClose: () => void, stats: GroupCommitStats, walSync: WalSync | undefined, checkpointer: Checkpointer | undefined) {
    this.#raw = raw;
    this.#db = db;
    this.#onClose = onClose;
    this.stats = stats;
    this.#walSync = walSync;
    this.#checkpointer = checkpointer;
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
    this.#leaseWrote = false;
    this.#lease += 1;
    return this.#connection;
  }

  /** The lease held now (by whoever holds the lock). */
  get lease(): number {
    return this.#lease;
  }

  /** The one connection Kysely is given. */
  get connection(): DatabaseConnection {
    return this.#connection;
  }

  async releaseConnection(): Promise<void> {
    const wrote = this.#leaseWrote;
    this.#leaseWrote = false;
    this.#lock.release();
    if (wrote) this.#checkpointer?.committed();
    if (wrote && this.#walSync !== undefined && relaxedScope.getStore() !== true) {
      this.stats.waited += 1;
      await this.#walSync.durable();
    }
  }

  async beginTransaction(): Promise<void> {
    this.#raw.exec('begin immediate');
    this.#txWrote = false;
    this.#txLease = this.#lease;
  }

  async commitTransaction(): Promise<void> {
    this.#txLease = 0;
    this.#raw.exec('commit');
    // A transaction of SELECTs only wrote nothing to make durable: its caller does not wait
    // for a sync (as a plain SELECT does not). Any other statement counts, rows changed or not.
    if (this.#txWrote) this.#leaseWrote = true;
    this.#txWrote = false;
  }

  async rollbackTransaction(): Promise<void> {
    this.#txLease = 0;
    // Some errors (I/O, full disk) make SQLite roll the transaction back itself.
    if (this.#raw.isTransaction) this.#raw.exec('rollback');
  }

  async savepoint(_c: DatabaseConnection, name: string): Promise<void> {
    this.#raw.exec(savepointSql('savepoint', name));
  }

  async rollbackToSavepoint(_c: DatabaseConnection, name: string): Promise<void> {
    this.#raw.exec(savepointSql('rollback to', name));
  }

  async releaseSavepoint(_c: DatabaseConnection, name: string): Promise<void> {
    this.#raw.exec(savepointSql('release', name));
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#refs -= 1;
    if (this.#refs > 0) return;
    this.#destroyed = true;
    this.#onClose();
    await this.#lock.acquire();
    try {
      await this.#walSync?.drain();
      await this.#checkpointer?.close();
    } finally {
      this.#lock.release();
      this.#db.close();
      this.#walSync?.close();
    }
  }

  /** A statement that may write ran: autocommitted, its caller waits; in a transaction, at the commit. */
  #wrote(): void {
    if (this.#raw.isTransaction) this.#txWrote = true;
    else this.#leaseWrote = true;
  }

  /** Called by the connection for every statement, with the lock held. */
  run(compiled: CompiledQuery): QueryResult<unknown> {
    return this.execute(compiled.sql, compiled.parameters, isRead(compiled));
  }

  /**
   * FixedSql outside a transaction: what Kysely does for a query on the database (lease,
   * statement, release with its wait for the WAL sync), without its executor.
   */
  async runAutocommit(sql: string, parameters: readonly unknown[], read: boolean): Promise<QueryResult<unknown>> {
    await this.acquireConnection();
    try {
      return this.execute(sql, parameters, read);
    } finally {
      await this.releaseConnection();
    }
  }

  /**
   * FixedSql in the transaction of `lease`; undefined if that transaction is not the one open
   * (it was committed or rolled back): the caller then goes through Kysely, which refuses it.
   */
  runInTransaction(lease: number, sql: string, parameters: readonly unknown[], read: boolean): QueryResult<unknown> | undefined {
    if (lease === 0 || lease !== this.#txLease) return undefined;
    return this.execute(sql, parameters, read);
  }

  /** One statement, with the lock held; `read`: a plain SELECT (it writes nothing). */
  execute(sql: string, parameters: readonly unknown[], read: boolean): QueryResult<unknown> {
    const stmt = this.#db.prepare(sql);
    if (stmt.reader) {
      const rows = stmt.all(parameters);
      // INSERT … RETURNING is a reader too: a write to wait for (at its commit in a transaction).
      if (!read) this.#wrote();
      return { rows };
    }
    const { changes, lastInsertRowid } = stmt.run(parameters);
    this.#wrote();
    return {
      insertId: lastInsertRowid == null ? undefined : BigInt(lastInsertRowid),
      numAffectedRows: changes == null ? undefined : BigInt(changes),
      rows: [],
    };
  }
}

/** A plain SELECT (built, or raw SQL that starts with SELECT): it writes nothing. */
function isRead(compiled: CompiledQuery): boolean {
  if (SelectQueryNode.is(compiled.query)) return true;
  return RawNode.is(compiled.query) && isReadSql(compiled.sql);
}

/** Raw SQL that starts with SELECT (FixedSql decides this once per statement). */
export function isReadSql(sql: string): boolean {
  return /^\s*select\s/i.test(sql);
}

function savepointSql(command: 'savepoint' | 'rollback to' | 'release', name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new TypeError(`invalid savepoint name ${name}`);
  return `${command} "${name}"`;
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
  readonly store: StoreDriver;
  constructor(store: StoreDriver) {
    super();
    this.store = store;
  }
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
  override get supportsMultipleConnections(): boolean {
    return true;
  }
}

/**
 * One store's handle on the shared driver (a dialect is one store, see openFiles): Kysely
 * destroys it when that store closes, and from then on the direct path refuses that store's
 * statements as Kysely does, while other stores on the file go on.
 */
class StoreDriver implements Driver {
  readonly shared: GroupCommitSqliteDriver;
  /**
   * Kysely initialises a driver at its first query and destroys it at close only if it was
   * initialised: until Kysely has run one, the direct path leaves the statements to Kysely,
   * or closing the store would not release its share of the driver.
   */
  initialised = false;
  closed = false;
  /** The executor of the store's Kysely instance (the only one the direct path runs for), once attached. */
  root: QueryExecutor | undefined;
  constructor(shared: GroupCommitSqliteDriver) {
    this.shared = shared;
  }
  init(): Promise<void> {
    this.initialised = true;
    return this.shared.init();
  }
  acquireConnection(): Promise<DatabaseConnection> {
    return this.shared.acquireConnection();
  }
  releaseConnection(): Promise<void> {
    return this.shared.releaseConnection();
  }
  beginTransaction(): Promise<void> {
    return this.shared.beginTransaction();
  }
  commitTransaction(): Promise<void> {
    return this.shared.commitTransaction();
  }
  rollbackTransaction(): Promise<void> {
    return this.shared.rollbackTransaction();
  }
  savepoint(c: DatabaseConnection, name: string): Promise<void> {
    return this.shared.savepoint(c, name);
  }
  rollbackToSavepoint(c: DatabaseConnection, name: string): Promise<void> {
    return this.shared.rollbackToSavepoint(c, name);
  }
  releaseSavepoint(c: DatabaseConnection, name: string): Promise<void> {
    return this.shared.releaseSavepoint(c, name);
  }
  destroy(): Promise<void> {
    this.closed = true;
    return this.shared.destroy();
  }
}

export class NodeSqliteDialect extends SqliteDialect {
  readonly #store: StoreDriver;
  constructor(driver: GroupCommitSqliteDriver) {
    // Kysely's own driver is never created (createDriver below); the database is unused.
    super({ database: {} as SqliteDatabase });
    this.#store = new StoreDriver(driver);
  }
  override createDriver(): Driver {
    return this.#store;
  }
  override createAdapter(): DialectAdapter {
    return new GatewaySqliteAdapter(this.#store);
  }
  /**
   * Lets FixedSql run on `db` (the one Kysely instance made with this dialect) and its
   * transactions without Kysely's executor (runFixedSqlDirect). Only for an instance without
   * plugins and without a query log: both would be bypassed.
   */
  attachDirectPath(db: KyselyExecutor): void {
    this.#store.root = db.getExecutor();
  }
}

/** What the direct path needs of a Kysely instance or transaction. */
type KyselyExecutor = Pick<Kysely<unknown>, 'getExecutor' | 'isTransaction'>;

/** The lease of each transaction the direct path has seen (keyed by the transaction's executor). */
const transactionLeases = new WeakMap<QueryExecutor, number>();

/**
 * FixedSql's direct path to the driver (src/store/fixed-sql.ts): the statement runs on the
 * driver as Kysely would run it (the same lock and lease, the same transaction, the same
 * statement cache, the same wait for the WAL sync and its errors) without Kysely's executor
 * and its per-query promises and objects. Undefined where Kysely must run it: another dialect,
 * an executor with plugins, a Kysely instance not attached (attachDirectPath), a connection
 * (`db.connection()`), a transaction no longer open.
 *
 * In a transaction the first statement goes through Kysely's connection provider (its
 * "transaction is already committed" guard, the transaction's one connection) and notes the
 * lease the transaction holds; later statements run while that lease's transaction is the
 * open one. The driver is synchronous: a statement runs whole when called. Throws what the
 * statement or Kysely's checks throw (FixedSql turns it into a rejection).
 */
export function runFixedSqlDirect(executor: KyselyExecutor, sql: string, parameters: readonly unknown[], read: boolean): Promise<QueryResult<unknown>> | undefined {
  const qe = executor.getExecutor();
  const adapter = qe.adapter;
  if (!(adapter instanceof GatewaySqliteAdapter) || qe.plugins.length > 0) return undefined;
  const store = adapter.store;
  if (store.root === undefined || !store.initialised) return undefined;
  const driver = store.shared;
  if (!executor.isTransaction) {
    if (qe !== store.root) return undefined;
    if (store.closed) return Promise.reject(new Error('driver has already been destroyed'));
    return driver.runAutocommit(sql, parameters, read);
  }
  const lease = transactionLeases.get(qe);
  if (lease === undefined) {
    return qe.provideConnection(async (connection) => {
      if (connection !== driver.connection) throw new TypeError('a transaction of the gateway SQLite store on another connection');
      transactionLeases.set(qe, driver.lease);
      return driver.execute(sql, parameters, read);
    });
  }
  const result = driver.runInTransaction(lease, sql, parameters, read);
  return result === undefined ? undefined : Promise.resolve(result);
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
  /** Default true (`wal-fsync` mode, a file): WAL checkpoints in a worker thread; false: SQLite's own, on the event loop. */
  checkpointThread?: boolean;
}

interface OpenFile {
  driver: GroupCommitSqliteDriver;
  raw: DatabaseSync;
}

/**
 * The files this process has open. A second store on the same file in the same process (two
 * gateways in one test process, the CLI's helpers) shares the first one's connection and
 * driver instead of opening another connection: node:sqlite is synchronous, so a second
 * connection waiting for the first one's write lock (a transaction in progress) would block
 * the very thread that has to finish that transaction. Separate processes each have
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

export function openNodeSqlite(options: NodeSqliteOptions): { dialect: NodeSqliteDialect; raw: DatabaseSync; stats: GroupCommitStats } {
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
  // crash: by the driver's WAL fdatasync (default) or SQLite's own (FULL). The group fsync
  // (above) makes that one fsync per event-loop turn rather than one per request.
  const journal = Object.values((raw.prepare('PRAGMA journal_mode').get() ?? {}) as Record<string, unknown>)[0];
  // The WAL fdatasync relies on WAL mode; where SQLite could not switch to it (e.g. a
  // filesystem without shared memory), it syncs at every COMMIT itself.
  const wanted = options.synchronous ?? 'wal-fsync';
  const mode = wanted === 'wal-fsync' && journal !== 'wal' ? 'full' : wanted;
  raw.exec(`PRAGMA synchronous = ${mode === 'full' ? 'FULL' : 'NORMAL'}`);
  raw.exec('PRAGMA foreign_keys = ON');
  const database = adapt(raw);
  const stats: GroupCommitStats = { flushes: 0, waited: 0, checkpoints: 0, failedFlushes: 0 };
  const walSync = mode === 'wal-fsync' && key !== undefined ? new WalSync(key, options.fdatasync ?? fdatasync, stats) : undefined;
  let checkpointer: Checkpointer | undefined;
  if (walSync !== undefined && key !== undefined && options.checkpointThread !== false) {
    raw.exec(`PRAGMA wal_autocheckpoint = ${FALLBACK_AUTOCHECKPOINT_PAGES}`);
    checkpointer = new Checkpointer(key, stats);
  }
  const driver = new GroupCommitSqliteDriver(
    raw,
    database,
    () => {
      if (key !== undefined) openFiles.delete(key);
    },
    stats,
    walSync,
    checkpointer,
  );
  if (key !== undefined) openFiles.set(key, { driver, raw });
  return { dialect: new NodeSqliteDialect(driver), raw, stats: driver.stats };
}
