import pg from 'pg';
import { systemClock, type VerifierClock } from './clock.ts';
import { assertConsumeArguments, assertSqlIdentifier, DEFAULT_PRUNE_INTERVAL_SECONDS, type ReplayStore } from './replay-store.ts';

export interface PostgresReplayStoreOptions {
  /** A pool the application owns (not closed by `close()`)… */
  pool?: pg.Pool;
  /** …or a connection string: the store opens and closes its own small pool. */
  connectionString?: string;
  /** Schema for the table (created if missing). Default: none, i.e. the connection's search_path. */
  schema?: string;
  /** Default `stepup_replay`. */
  tableName?: string;
  clock?: VerifierClock;
  /** Expired rows are deleted at most this often (clock time). Default 60. */
  pruneIntervalSeconds?: number;
  /**
   * A row is deleted only this long after its expiry. The processes sharing the table each
   * prune by their own clock: without the grace, one whose clock runs ahead deletes a jti
   * that a process with a slower clock still accepts the token for (a replay). Must exceed
   * the worst clock difference between them. Default 300.
   */
  pruneGraceSeconds?: number;
  /**
   * The longest each statement of a consume may take — the insert, and on first use the table
   * set-up — waiting for a pooled connection included, before the consume fails (closed: the
   * token is refused as `replay_store_unavailable`).
   * Without it a PostgreSQL that stops answering — a network partition, a lock — would hold
   * every request that presents a token for as long as TCP takes to give up. Default 5000.
   */
  queryTimeoutMs?: number;
}

/** How long past its expiry a row is kept by default (see `pruneGraceSeconds`). */
export const DEFAULT_PRUNE_GRACE_SECONDS = 300;

/** Default bound on each statement of a consume (see `queryTimeoutMs`). */
export const DEFAULT_QUERY_TIMEOUT_MS = 5000;

/**
 * Replay store in PostgreSQL: the choice when several relying-service processes or hosts
 * accept tokens. `INSERT … ON CONFLICT (jti) DO NOTHING RETURNING jti` is atomic under any
 * concurrency: exactly one inserter gets the row back.
 */
export class PostgresReplayStore implements ReplayStore {
  readonly #pool: pg.Pool;
  readonly #ownsPool: boolean;
  readonly #qualifiedTable: string;
  readonly #lockName: string;
  readonly #schema: string | undefined;
  readonly #table: string;
  readonly #clock: VerifierClock;
  readonly #pruneIntervalMs: number;
  readonly #pruneGraceMs: number;
  readonly #timeoutMs: number;
  #ready: Promise<void> | undefined;
  #nextPruneAt = 0;

  constructor(options: PostgresReplayStoreOptions) {
    if ((options.pool === undefined) === (options.connectionString === undefined)) {
      throw new TypeError('PostgresReplayStore needs exactly one of pool or connectionString');
    }
    const table = options.tableName ?? 'stepup_replay';
    assertSqlIdentifier(table, 'tableName');
    if (options.schema !== undefined) assertSqlIdentifier(options.schema, 'schema');
    const pruneIntervalSeconds = options.pruneIntervalSeconds ?? DEFAULT_PRUNE_INTERVAL_SECONDS;
    if (!Number.isFinite(pruneIntervalSeconds) || pruneIntervalSeconds < 0) throw new TypeError('pruneIntervalSeconds must be >= 0');
    const pruneGraceSeconds = options.pruneGraceSeconds ?? DEFAULT_PRUNE_GRACE_SECONDS;
    if (!Number.isFinite(pruneGraceSeconds) || pruneGraceSeconds < 0) throw new TypeError('pruneGraceSeconds must be >= 0');
    const queryTimeoutMs = options.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
    if (!Number.isSafeInteger(queryTimeoutMs) || queryTimeoutMs < 1) throw new TypeError('queryTimeoutMs must be a positive integer');

    this.#ownsPool = options.pool === undefined;
    this.#pool = options.pool ?? new pg.Pool({ connectionString: options.connectionString, max: 5, connectionTimeoutMillis: 5000 });
    if (this.#ownsPool) {
      // A dropped connection (PostgreSQL restarted) must not crash the relying service: the
      // next consume fails closed (replay_store_unavailable) and a later one reconnects.
      this.#pool.on('error', () => {});
      this.#pool.on('connect', (client) => {
        client.on('error', () => {});
      });
    }
    this.#schema = options.schema;
    this.#table = table;
    this.#qualifiedTable = options.schema === undefined ? `"${table}"` : `"${options.schema}"."${table}"`;
    this.#lockName = `stepgate-replay-store:${options.schema ?? ''}.${table}`;
    this.#clock = options.clock ?? systemClock;
    this.#pruneIntervalMs = pruneIntervalSeconds * 1000;
    this.#pruneGraceMs = pruneGraceSeconds * 1000;
    this.#timeoutMs = queryTimeoutMs;
  }

  /** Creates the schema and table if missing. Called by the first `consume`; call it at start-up to fail early. */
  init(): Promise<void> {
    this.#ready ??= this.#withDeadline(this.#createTable()).catch((err: unknown) => {
      this.#ready = undefined;
      throw err;
    });
    return this.#ready;
  }

  async consume(jti: string, expiresAt: Date): Promise<boolean> {
    assertConsumeArguments(jti, expiresAt);
    await this.init();
    const now = this.#clock.now().getTime();
    if (now >= this.#nextPruneAt) {
      this.#nextPruneAt = now + this.#pruneIntervalMs;
      // Housekeeping, not awaited: a slow or failing delete must neither delay nor refuse a token.
      this.#prune(now).catch(() => undefined);
    }
    const result = await this.#query(`INSERT INTO ${this.#qualifiedTable} (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING RETURNING jti`, [
      jti,
      expiresAt.getTime(),
    ]);
    return result.rowCount === 1;
  }

  /** Deletes rows expired more than `pruneGraceSeconds` ago; returns how many. */
  async prune(): Promise<number> {
    await this.init();
    return this.#prune(this.#clock.now().getTime());
  }

  async close(): Promise<void> {
    if (this.#ownsPool) await this.#pool.end();
  }

  async #prune(now: number): Promise<number> {
    const result = await this.#query(`DELETE FROM ${this.#qualifiedTable} WHERE expires_at <= $1`, [now - this.#pruneGraceMs]);
    return result.rowCount ?? 0;
  }

  /** Rejects once `queryTimeoutMs` has passed; a late answer of `work` is dropped. */
  async #withDeadline<T>(work: Promise<T>): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`the replay store did not answer within ${this.#timeoutMs} ms`)), this.#timeoutMs);
    });
    work.catch(() => undefined);
    try {
      return await Promise.race([work, deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One pooled query within the deadline. pg's own query_timeout also ends the wait on the
   * connection (which the pool then discards); the deadline covers waiting for a connection.
   */
  #query(text: string, values: unknown[]): Promise<pg.QueryResult> {
    return this.#withDeadline(this.#pool.query({ text, values, query_timeout: this.#timeoutMs } as pg.QueryConfig));
  }

  // Two processes starting at once would race on CREATE … IF NOT EXISTS (it is not atomic in
  // PostgreSQL: the loser can hit a unique violation in the catalog), so creation is serialised
  // with a transaction-scoped advisory lock.
  async #createTable(): Promise<void> {
    const client = await this.#pool.connect();
    const run = (text: string, values: unknown[] = []) => client.query({ text, values, query_timeout: this.#timeoutMs } as pg.QueryConfig);
    try {
      await run('BEGIN');
      await run('SELECT pg_advisory_xact_lock(hashtext($1))', [this.#lockName]);
      if (this.#schema !== undefined) await run(`CREATE SCHEMA IF NOT EXISTS "${this.#schema}"`);
      await run(`CREATE TABLE IF NOT EXISTS ${this.#qualifiedTable} (jti text PRIMARY KEY, expires_at bigint NOT NULL)`);
      await run(`CREATE INDEX IF NOT EXISTS "${this.#table}_expires_at" ON ${this.#qualifiedTable} (expires_at)`);
      await run('COMMIT');
      client.release();
    } catch (err) {
      // The connection may still be busy with a timed-out statement: discard it rather than
      // queue a ROLLBACK behind it (PostgreSQL rolls the transaction back when it goes).
      client.release(true);
      throw err;
    }
  }
}
