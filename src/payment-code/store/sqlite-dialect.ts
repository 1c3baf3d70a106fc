/**
 * P's node:sqlite driver for Kysely: durable commits with the fsync off the event loop.
 *
 * This mirrors the gateway's driver (src/store/node-sqlite-dialect.ts: `WalSync`, the `Lock`,
 * the `openFiles` registry) on purpose, and is a copy rather than an import because the
 * payment-code service is a third party of the gateway: it imports nothing from src/store/
 * (scripts/lint-src.js enforces it), so that it can be read, deployed and replaced on its own.
 * A fix to one of the two drivers most likely belongs in the other as well (the checkpoint
 * thread and the refusal of every write after a failed WAL sync went from here to the
 * gateway's).
 *
 * The design (why, in short):
 *
 * - SQLite runs in WAL mode with `synchronous = NORMAL`: a COMMIT appends its frames to the WAL
 *   with write() and returns; SQLite's write lock is held for one transaction only and
 *   released at its COMMIT. Every transaction commits on its own: one that fails (its own
 *   check, a constraint at COMMIT) fails alone and leaves nothing behind.
 * - A caller that committed a write (a transaction, or an autocommitted INSERT/UPDATE/DELETE)
 *   is answered only after an fdatasync() of the WAL file that *started after its COMMIT* has
 *   returned. That is the sync SQLite itself would do at COMMIT with `synchronous = FULL`, but
 *   it runs on the libuv pool (node:fs `fdatasync`), not on P's event loop, and all the commits
 *   of one event-loop turn share one (group fsync). Checkpoints sync the WAL and the database
 *   file themselves (NORMAL does that). fsync is per file, whichever descriptor wrote.
 * - A failed fdatasync fails every caller waiting for it: they fail closed (a code whose
 *   redemption was refused may turn out burnt after a crash; never the other way round).
 * - Checkpoints (copying the WAL into the database file, with an fsync of each) run in a
 *   worker thread on a connection of its own (`Checkpointer`), not inside a COMMIT on P's
 *   event loop, where SQLite's automatic checkpoint would stall P for milliseconds every
 *   thousand pages. SQLite's own still runs every 4,000 pages, with little left to copy.
 * - A read (SELECT) never waits. It may see a commit whose sync is still under way; the only
 *   way a client can act on such a row is through the answer of its writer, which waits, so
 *   what a read can see early is a refusal at worst (a code someone is redeeming right now).
 *
 * The design this replaces merged all the writes of an event-loop turn into one open
 * `BEGIN IMMEDIATE … COMMIT` under `synchronous = FULL`: the fsync ran on the event loop inside
 * COMMIT (9–17 % of P's CPU) and the write lock was held for a whole turn, which starves
 * another process writing the same file (the gateway dropped that design for this reason).
 */
import { closeSync, fdatasync, fsyncSync, openSync, realpathSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Worker } from 'node:worker_threads';
import {
  type CompiledQuery,
  type DatabaseConnection,
  type DialectAdapter,
  type Driver,
  type QueryResult,
  RawNode,
  SelectQueryNode,
  SqliteAdapter,
  type SqliteDatabase,
  SqliteDialect,
  type SqliteStatement,
} from 'kysely';

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
  // A sync nobody waits for (its only writer was a fire-and-forget statement) must not be an
  // unhandled rejection.
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

export interface GroupCommitStats {
  /** WAL fdatasyncs started (each makes every commit before it durable). */
  flushes: number;
  /** Database calls that were answered only after such a sync. */
  waited: number;
  /** WAL fdatasyncs that failed (their callers, and every later writer, were refused). */
  failedFlushes: number;
  /** Checkpoints run by the checkpointer thread (off the event loop). */
  checkpoints: number;
}

export type FdatasyncFn = (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => void;

/** The `code` of a WalSyncError. */
export const WAL_SYNC_FAILED = 'STEPGATE_WAL_SYNC_FAILED';

/**
 * A committed write that could not be made durable: its WAL fdatasync failed (every later
 * write is refused until restart), or the WAL could not be opened to sync it (transient, e.g.
 * EMFILE). P cannot take writes: 503, not 500 (isPaymentCodeDatabaseUnavailable). The system
 * error is the cause.
 */
export class WalSyncError extends Error {
  readonly code = WAL_SYNC_FAILED;
  constructor(what: string, cause: unknown) {
    super(`${what}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'WalSyncError';
  }
}

/**
 * Group fsync of the WAL, off the event loop: every caller that committed during one
 * event-loop turn waits for one fdatasync started after its commit (see the file header).
 *
 * Once an fdatasync has failed, every later `durable()` fails with the same error, until the
 * store is reopened. After a write error the kernel may have dropped the dirty pages (and
 * reports the error once), so a later fdatasync can succeed while frames of the WAL before it
 * are gone; WAL recovery stops at the first bad frame, so a later commit "synced" after that
 * could still be lost. Refusing is the only answer that stays true (PostgreSQL does the same
 * by stopping).
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

/** Commits between two checkpoint requests (a commit writes a few pages to the WAL). */
const CHECKPOINT_EVERY_COMMITS = 64;
/**
 * SQLite's automatic checkpoint (on the event loop) still runs when the WAL holds this many
 * pages: under steady writes the thread's checkpoint seldom finishes at a moment when no new
 * frame has been appended, which the WAL needs to start again from its beginning, so this one
 * does that, cheaply (the thread has copied nearly every page), and it bounds the WAL (16 MB
 * of 4 KB pages) should the thread fail.
 */
const FALLBACK_AUTOCHECKPOINT_PAGES = 4000;

/**
 * Runs WAL checkpoints in a worker thread with its own connection, so that their page copying
 * and their two fsyncs do not stall P's event loop inside some caller's COMMIT (SQLite's
 * automatic checkpoint, every 1,000 pages, took 3–50 ms there). A PASSIVE checkpoint takes no
 * lock that writers or readers wait for; its correctness and durability are SQLite's own (it
 * syncs the WAL before copying and the database file after). If the thread fails, SQLite's
 * automatic checkpoint (set to FALLBACK_AUTOCHECKPOINT_PAGES) keeps the WAL bounded.
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
 * One connection, used by one caller at a time (a FIFO lock), each transaction committed at
 * once. Kysely's connection mutex is replaced by the driver's own lock (the adapter reports
 * multiple connections) because the wait for the WAL sync must happen after the connection is
 * released, or every other caller would queue behind the fsync.
 */
class WalSyncSqliteDriver implements Driver {
  readonly #raw: DatabaseSync;
  readonly #db: SqliteDatabase;
  readonly #lock = new Lock();
  readonly #connection: WalSyncConnection;
  /** The current lease committed a write. */
  #leaseWrote = false;
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
    this.#connection = new WalSyncConnection(this);
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
    return this.#connection;
  }

  async releaseConnection(): Promise<void> {
    const wrote = this.#leaseWrote;
    this.#leaseWrote = false;
    this.#lock.release();
    if (wrote) this.#checkpointer?.committed();
    if (wrote && this.#walSync !== undefined) {
      this.stats.waited += 1;
      await this.#walSync.durable();
    }
  }

  async beginTransaction(): Promise<void> {
    this.#raw.exec('begin immediate');
    this.#txWrote = false;
  }

  async commitTransaction(): Promise<void> {
    this.#raw.exec('commit');
    // A transaction of SELECTs only wrote nothing to make durable: its caller does not wait
    // for a sync (as a plain SELECT does not). Any other statement counts, rows changed or not.
    if (this.#txWrote) this.#leaseWrote = true;
    this.#txWrote = false;
  }

  async rollbackTransaction(): Promise<void> {
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
    // Whoever holds or waits for the connection finishes first; their syncs are awaited.
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
    const stmt = this.#db.prepare(compiled.sql);
    const parameters = compiled.parameters as unknown[];
    if (stmt.reader) {
      const rows = stmt.all(parameters);
      // INSERT … RETURNING is a reader too: a write to wait for (at its commit in a transaction).
      if (!isRead(compiled)) this.#wrote();
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
  return RawNode.is(compiled.query) && /^\s*select\s/i.test(compiled.sql);
}

function savepointSql(command: 'savepoint' | 'rollback to' | 'release', name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(name)) throw new TypeError(`invalid savepoint name ${name}`);
  return `${command} "${name}"`;
}

class WalSyncConnection implements DatabaseConnection {
  readonly #driver: WalSyncSqliteDriver;
  constructor(driver: WalSyncSqliteDriver) {
    this.#driver = driver;
  }
  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    return this.#driver.run(compiled) as QueryResult<R>;
  }
  // biome-ignore lint/correctness/useYield: streaming is not offered (nothing in P uses it); refuse it loudly.
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('streaming queries are not supported by this driver');
  }
}

/**
 * Lets the migrator run inside one transaction (BEGIN IMMEDIATE), so two processes starting
 * at once do not both migrate. It also reports "multiple connections" so that Kysely leaves
 * the locking to the driver (its mutex would be held while a caller waits for the sync).
 */
class WalSyncSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
  override get supportsMultipleConnections(): boolean {
    return true;
  }
}

class NodeSqliteDialect extends SqliteDialect {
  readonly #driver: WalSyncSqliteDriver;
  constructor(driver: WalSyncSqliteDriver) {
    // Kysely's own driver is never created (createDriver below); the database is unused.
    super({ database: {} as SqliteDatabase });
    this.#driver = driver;
  }
  override createDriver(): Driver {
    return this.#driver;
  }
  override createAdapter(): DialectAdapter {
    return new WalSyncSqliteAdapter();
  }
}

export interface NodeSqliteOptions {
  file: string;
  busyTimeoutMs: number;
  /** Tests: replaces fs.fdatasync (the WAL sync before a writer is answered). */
  fdatasync?: FdatasyncFn;
  /** Default true: WAL checkpoints in a worker thread; false: SQLite's own, on the event loop. */
  checkpointThread?: boolean;
}

interface OpenFile {
  driver: WalSyncSqliteDriver;
  raw: DatabaseSync;
}

/**
 * The files this process has open. A second store on the same file in the same process (two
 * services in one test process, the CLI's helpers) shares the first one's connection and
 * driver instead of opening another connection: node:sqlite is synchronous, so a second
 * connection waiting for the first one's write lock (a transaction in progress) would block
 * the very thread that has to finish that transaction. Separate processes each have their
 * own connection and SQLite's file lock between them.
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
  // A redeemed code or a consumed token must survive an OS crash or a power loss too, or it
  // could be redeemed again after a restart: every commit is on disk before its callers are
  // answered, by the driver's WAL fdatasync (NORMAL) or, where SQLite could not switch to WAL
  // (e.g. a filesystem without shared memory) or the file is in memory, by SQLite's own (FULL).
  const journal = Object.values((raw.prepare('PRAGMA journal_mode').get() ?? {}) as Record<string, unknown>)[0];
  const walFsync = journal === 'wal' && key !== undefined;
  raw.exec(`PRAGMA synchronous = ${walFsync ? 'NORMAL' : 'FULL'}`);
  raw.exec('PRAGMA foreign_keys = ON');
  const stats: GroupCommitStats = { flushes: 0, waited: 0, failedFlushes: 0, checkpoints: 0 };
  const walSync = walFsync ? new WalSync(key, options.fdatasync ?? fdatasync, stats) : undefined;
  let checkpointer: Checkpointer | undefined;
  if (walFsync && options.checkpointThread !== false) {
    raw.exec(`PRAGMA wal_autocheckpoint = ${FALLBACK_AUTOCHECKPOINT_PAGES}`);
    checkpointer = new Checkpointer(key, stats);
  }
  const driver = new WalSyncSqliteDriver(
    raw,
    adapt(raw),
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
