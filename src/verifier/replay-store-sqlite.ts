import { closeSync, fdatasync, fdatasyncSync, openSync } from 'node:fs';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { systemClock, type VerifierClock } from './clock.ts';
import { assertConsumeArguments, assertSqlIdentifier, DEFAULT_PRUNE_INTERVAL_SECONDS, type ReplayStore } from './replay-store.ts';

export interface SqliteReplayStoreOptions {
  /** Database file (created if missing). Several processes on one host may open the same file. */
  file?: string;
  /** Or an already open connection (the store then does not close it). */
  database?: DatabaseSync;
  /** Default `stepup_replay`. */
  tableName?: string;
  clock?: VerifierClock;
  /** How long a write waits for another process's lock before failing (closed). Default 5000. */
  busyTimeoutMs?: number;
  /** Expired rows are deleted at most this often (clock time). Default 60. */
  pruneIntervalSeconds?: number;
  /** Tests only: replaces fs.fdatasync (the WAL sync before a batch is answered). */
  fdatasync?: (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => void;
}

/**
 * Replay store in a SQLite file (node:sqlite, WAL). Atomicity comes from one
 * `INSERT … ON CONFLICT DO NOTHING` statement: SQLite serialises writers, so across
 * connections and processes exactly one insert of a jti changes a row.
 *
 * node:sqlite is synchronous: a commit blocks the event loop for one small write (and, under
 * contention from another process, up to `busyTimeoutMs`). With a file of its own the store
 * commits the consumes of one event-loop turn together (group commit), and makes them durable
 * without an fsync on the event loop: SQLite runs WAL with `synchronous = NORMAL` (COMMIT
 * only writes the WAL) and the store fdatasync()s the WAL file itself on Node's thread pool,
 * answering the batch's callers when that returns — the sync FULL would do at COMMIT. A
 * failed sync fails the batch's callers (closed: the token is refused).
 */
export class SqliteReplayStore implements ReplayStore {
  readonly #db: DatabaseSync;
  readonly #ownsDatabase: boolean;
  readonly #clock: VerifierClock;
  readonly #pruneIntervalMs: number;
  readonly #insert: StatementSync;
  readonly #delete: StatementSync;
  // Prepared once: exec() would parse the SQL again for every batch.
  readonly #begin: StatementSync;
  readonly #commit: StatementSync;
  readonly #rollback: StatementSync;
  #nextPruneAt = 0;
  /** WAL mode on our own file: the WAL we fdatasync ourselves; undefined: FULL does it. */
  readonly #walFile: string | undefined;
  #walFd: number | undefined;
  /**
   * The error of a failed WAL fdatasync: from then on every consume is refused until the store
   * is reopened. The kernel may have dropped the WAL pages of the failed sync and a later sync
   * can succeed while they are gone (WAL recovery stops at the first bad frame), so a jti
   * "consumed" after that could come back after a power loss: a replayed token accepted.
   */
  #broken: unknown;
  readonly #fdatasync: NonNullable<SqliteReplayStoreOptions['fdatasync']>;

  constructor(options: SqliteReplayStoreOptions) {
    if ((options.file === undefined) === (options.database === undefined)) {
      throw new TypeError('SqliteReplayStore needs exactly one of file or database');
    }
    const table = options.tableName ?? 'stepup_replay';
    assertSqlIdentifier(table, 'tableName');
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) throw new TypeError('busyTimeoutMs must be a non-negative integer');
    const pruneIntervalSeconds = options.pruneIntervalSeconds ?? DEFAULT_PRUNE_INTERVAL_SECONDS;
    if (!Number.isFinite(pruneIntervalSeconds) || pruneIntervalSeconds < 0) throw new TypeError('pruneIntervalSeconds must be >= 0');

    this.#ownsDatabase = options.database === undefined;
    this.#db = options.database ?? new DatabaseSync(options.file as string);
    this.#clock = options.clock ?? systemClock;
    this.#pruneIntervalMs = pruneIntervalSeconds * 1000;
    this.#fdatasync = options.fdatasync ?? fdatasync;
    let walFile: string | undefined;
    if (this.#ownsDatabase) {
      this.#db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
      const mode = Object.values((this.#db.prepare('PRAGMA journal_mode = WAL').get() ?? {}) as Record<string, unknown>)[0];
      // A consumed jti must survive an OS crash too, or the token becomes usable again: in
      // WAL mode by our own fdatasync of the WAL before answering, else by SQLite's FULL.
      if (mode === 'wal' && options.file !== ':memory:' && options.file !== '') walFile = `${options.file}-wal`;
      this.#db.exec(`PRAGMA synchronous = ${walFile === undefined ? 'FULL' : 'NORMAL'}`);
    }
    this.#walFile = walFile;
    this.#db.exec(
      `CREATE TABLE IF NOT EXISTS ${table} (jti TEXT PRIMARY KEY NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
       CREATE INDEX IF NOT EXISTS ${table}_expires_at ON ${table} (expires_at);`,
    );
    this.#insert = this.#db.prepare(`INSERT INTO ${table} (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING`);
    this.#delete = this.#db.prepare(`DELETE FROM ${table} WHERE expires_at <= ?`);
    this.#begin = this.#db.prepare('BEGIN IMMEDIATE');
    this.#commit = this.#db.prepare('COMMIT');
    this.#rollback = this.#db.prepare('ROLLBACK');
  }

  async consume(jti: string, expiresAt: Date): Promise<boolean> {
    assertConsumeArguments(jti, expiresAt);
    this.#pruneIfDue();
    // A connection the caller shares may be inside the caller's own transaction: one
    // autocommitted statement, never a transaction of ours around it.
    if (!this.#ownsDatabase) return Number(this.#insert.run(jti, expiresAt.getTime()).changes) === 1;
    if (this.#broken !== undefined) return Promise.reject(this.#broken);
    // The consumes that arrive within one turn of the loop are committed together (one WAL
    // fdatasync for all, see the class comment), and each caller hears its answer only after
    // that sync: exactly-once is the insert's, unchanged (a jti twice in one batch: the
    // second insert changes nothing).
    return new Promise<boolean>((resolve, reject) => {
      this.#batch.push({ jti, expiresAtMs: expiresAt.getTime(), resolve, reject });
      if (this.#batch.length === 1) setImmediate(() => this.#commitBatch());
    });
  }

  readonly #batch: { jti: string; expiresAtMs: number; resolve: (first: boolean) => void; reject: (err: unknown) => void }[] = [];

  #commitBatch(mode: 'async' | 'sync' = 'async'): void {
    const batch = this.#batch.splice(0, this.#batch.length);
    if (batch.length === 0) return;
    let results: boolean[];
    try {
      this.#begin.run();
      try {
        results = batch.map((b) => Number(this.#insert.run(b.jti, b.expiresAtMs).changes) === 1);
        this.#commit.run();
      } catch (err) {
        try {
          this.#rollback.run();
        } catch {
          // The failed statement may have ended the transaction already.
        }
        throw err;
      }
    } catch (err) {
      for (const b of batch) b.reject(err);
      return;
    }
    const answer = (err: unknown) => {
      if (err) for (const b of batch) b.reject(err);
      else for (const [i, b] of batch.entries()) b.resolve(results[i] as boolean);
    };
    if (this.#walFile === undefined) {
      answer(null);
      return;
    }
    let fd: number;
    try {
      fd = this.#walDescriptor();
    } catch (err) {
      answer(err);
      return;
    }
    // A failed sync (not a failure to open the WAL) breaks the store for good: see #broken.
    if (mode === 'sync') {
      try {
        fdatasyncSync(fd);
        answer(null);
      } catch (err) {
        this.#broken ??= err;
        answer(err);
      }
      return;
    }
    this.#fdatasync(fd, (err) => {
      if (err) this.#broken ??= err;
      answer(err);
    });
  }

  /** The WAL exists from the first commit on and keeps its inode while the file is open. */
  #walDescriptor(): number {
    this.#walFd ??= openSync(this.#walFile as string, 'r');
    return this.#walFd;
  }

  #pruneIfDue(): void {
    const now = this.#clock.now().getTime();
    if (now < this.#nextPruneAt) return;
    try {
      this.#prune(now);
    } catch {
      // Pruning is housekeeping: a busy database must not turn into a refused token.
    }
  }

  /** Deletes expired rows; returns how many. */
  prune(): number {
    return this.#prune(this.#clock.now().getTime());
  }

  close(): void {
    // Consumes still waiting for their turn are committed (and answered) first.
    if (this.#db.isOpen) this.#commitBatch('sync');
    if (this.#ownsDatabase && this.#db.isOpen) this.#db.close();
    // A sync still in flight keeps working on its own descriptor's file; ours is closed after.
    if (this.#walFd !== undefined) {
      const fd = this.#walFd;
      this.#walFd = undefined;
      this.#fdatasync(fd, () => closeSync(fd));
    }
  }

  #prune(now: number): number {
    this.#nextPruneAt = now + this.#pruneIntervalMs;
    return Number(this.#delete.run(now).changes);
  }
}
