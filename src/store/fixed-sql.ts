import { CompiledQuery, type QueryResult } from 'kysely';
import type { DialectName, Executor } from './database.ts';

/**
 * A fixed statement for the hottest paths (every request's rate-limit counter, every audit
 * append): written once as SQL with `?` placeholders and run as a CompiledQuery, skipping
 * Kysely's builder and compiler, which cost more than SQLite's own execution of these short
 * statements. Parameters are always bound, never spliced into the text; the text is a
 * constant of the calling module, never built from input.
 */
export class FixedSql {
  readonly #sqlite: string;
  readonly #postgres: string;

  constructor(text: string) {
    this.#sqlite = text;
    let n = 0;
    this.#postgres = text.replace(/\?/g, () => `$${(n += 1)}`);
  }

  run<R>(executor: Executor, dialect: DialectName, parameters: readonly unknown[]): Promise<QueryResult<R>> {
    return executor.executeQuery<R>(CompiledQuery.raw(dialect === 'postgres' ? this.#postgres : this.#sqlite, [...parameters]));
  }
}
