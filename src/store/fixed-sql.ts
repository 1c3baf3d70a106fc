import { CompiledQuery, type QueryResult, SqliteAdapter } from 'kysely';
import type { Executor } from './database.ts';
import { isReadSql, runFixedSqlDirect } from './node-sqlite-dialect.ts';
import { registerNamedStatement } from './pg-named-statements.ts';

/**
 * A fixed statement for the hottest paths (every request's rate-limit counter, every audit
 * append, the step-up and client lookups, the attempt charges): written once as SQL with `?`
 * placeholders and run as a CompiledQuery, skipping Kysely's builder and compiler, which cost
 * more than SQLite's own execution of these short statements (a primary-key SELECT: ~70 µs
 * built, ~25 µs fixed, on the bench machine). Parameters are always bound, never spliced
 * into the text; the text is a constant of the calling module, never built from input.
 * Identifiers are quoted as Kysely quotes them, so the same text runs on both databases.
 */
export class FixedSql<R = unknown> {
  readonly #sqlite: string;
  readonly #postgres: string;
  /** A plain SELECT: it writes nothing (the SQLite driver's WAL sync needs to know). */
  readonly #read: boolean;

  /**
   * `options.postgres`: a different text for PostgreSQL (same `?` placeholders, same
   * parameters, same result columns), where the two dialects need different SQL.
   */
  constructor(text: string, options: { postgres?: string } = {}) {
    this.#sqlite = text;
    this.#read = isReadSql(text);
    this.#postgres = (options.postgres ?? text)
      .split('?')
      .map((part, i) => (i === 0 ? part : `$${i}${part}`))
      .join('');
    registerNamedStatement(this.#postgres);
  }

  /**
   * Runs the statement on `executor` (the database, or the transaction it belongs to). On the
   * gateway's SQLite store it runs straight on the driver, without Kysely's query executor
   * (runFixedSqlDirect: the same lock, transaction, statement cache, WAL-sync wait and errors);
   * elsewhere — PostgreSQL, an executor with plugins, a connection, an ended transaction —
   * through Kysely's executor. On PostgreSQL the executor is a few µs of a statement's ~55 µs
   * of client-side CPU, below what a benchmark here resolves (bench/notes/fixed-sql-direct.md);
   * there the text runs as a named prepared statement (pg-named-statements.ts).
   */
  run(executor: Executor, parameters: readonly unknown[]): Promise<QueryResult<R>> {
    try {
      const direct = runFixedSqlDirect(executor, this.#sqlite, parameters, this.#read);
      if (direct !== undefined) return direct as Promise<QueryResult<R>>;
    } catch (err) {
      // Kysely's check that the transaction is open throws at once; callers get a rejection, as from executeQuery.
      return Promise.reject(err);
    }
    const sqlite = executor.getExecutor().adapter instanceof SqliteAdapter;
    return executor.executeQuery<R>(CompiledQuery.raw(sqlite ? this.#sqlite : this.#postgres, [...parameters]));
  }

  /** The first row, or undefined. */
  async first(executor: Executor, parameters: readonly unknown[]): Promise<R | undefined> {
    return (await this.run(executor, parameters)).rows[0];
  }
}
