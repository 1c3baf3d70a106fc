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
}

/**
 * Replay store in a SQLite file (node:sqlite, WAL). Atomicity comes from one
 * `INSERT … ON CONFLICT DO NOTHING` statement: SQLite serialises writers, so across
 * connections and processes exactly one insert of a jti changes a row.
 *
 * node:sqlite is synchronous: a commit blocks the event loop for one small write and its fsync
 * (and, under contention from another process, up to `busyTimeoutMs`). With a file of its own
 * the store commits the consumes of one event-loop turn together (group commit).
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
    if (this.#ownsDatabase) {
      this.#db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
      this.#db.exec('PRAGMA journal_mode = WAL');
      // FULL: a consumed jti must survive an OS crash too, or the token becomes usable again.
      this.#db.exec('PRAGMA synchronous = FULL');
    }
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
    // Our own file is synchronous = FULL: every commit is an fsync, on the event loop. The
    // consumes that arrive within one turn of the loop are committed together (one fsync for
    // all), and each caller hears its answer only after that commit: exactly-once is the
    // insert's, unchanged (a jti twice in one batch: the second insert changes nothing).
    return new Promise<boolean>((resolve, reject) => {
      this.#batch.push({ jti, expiresAtMs: expiresAt.getTime(), resolve, reject });
      if (this.#batch.length === 1) setImmediate(() => this.#commitBatch());
    });
  }

  readonly #batch: { jti: string; expiresAtMs: number; resolve: (first: boolean) => void; reject: (err: unknown) => void }[] = [];

  #commitBatch(): void {
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
    for (const [i, b] of batch.entries()) b.resolve(results[i] as boolean);
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
    if (this.#db.isOpen) this.#commitBatch();
    if (this.#ownsDatabase && this.#db.isOpen) this.#db.close();
  }

  #prune(now: number): number {
    this.#nextPruneAt = now + this.#pruneIntervalMs;
    return Number(this.#delete.run(now).changes);
  }
}
