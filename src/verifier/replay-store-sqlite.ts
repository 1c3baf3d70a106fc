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
 * node:sqlite is synchronous: a consume blocks the event loop for one small write (and, under
 * contention from another process, up to `busyTimeoutMs`).
 */
export class SqliteReplayStore implements ReplayStore {
  readonly #db: DatabaseSync;
  readonly #ownsDatabase: boolean;
  readonly #clock: VerifierClock;
  readonly #pruneIntervalMs: number;
  readonly #insert: StatementSync;
  readonly #delete: StatementSync;
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
  }

  async consume(jti: string, expiresAt: Date): Promise<boolean> {
    assertConsumeArguments(jti, expiresAt);
    const now = this.#clock.now().getTime();
    if (now >= this.#nextPruneAt) {
      try {
        this.#prune(now);
      } catch {
        // Pruning is housekeeping: a busy database must not turn into a refused token.
      }
    }
    const result = this.#insert.run(jti, expiresAt.getTime());
    return Number(result.changes) === 1;
  }

  /** Deletes expired rows; returns how many. */
  prune(): number {
    return this.#prune(this.#clock.now().getTime());
  }

  close(): void {
    if (this.#ownsDatabase && this.#db.isOpen) this.#db.close();
  }

  #prune(now: number): number {
    this.#nextPruneAt = now + this.#pruneIntervalMs;
    return Number(this.#delete.run(now).changes);
  }
}
