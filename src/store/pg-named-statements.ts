import { createHash } from 'node:crypto';
import type pg from 'pg';

/**
 * PostgreSQL named prepared statements for the fixed SQL of the hot paths (FixedSql): the
 * server parses and plans each such text once per connection instead of at every execution.
 * The texts are constants of their modules, registered as FixedSql instances are created, so
 * the set is small and bounded; each gets a name derived from its text (a different text, a
 * different name). Anything else — Kysely's builder queries, BEGIN/COMMIT — runs unnamed as
 * before.
 *
 * Left unnamed: texts that return `*` (`select *`, `returning *`). PostgreSQL refuses to run a
 * prepared statement whose result columns changed since it was prepared ("cached plan must not
 * change result type"), so a migration that adds a column — applied by another process in a
 * rolling upgrade — would make every connection of this process fail that statement until it
 * reconnects. A statement with its columns listed is only re-planned by PostgreSQL.
 *
 * Connections that are reset behind the gateway's back (a pooler in transaction mode handing
 * the next transaction another server connection, `DISCARD ALL`) lose the statements the
 * driver believes prepared: turn them off there (`database.preparedStatements: false`,
 * docs/postgresql.md).
 */
const names = new Map<string, string>();

/** Registers a fixed PostgreSQL text (with `$n` placeholders) to be run as a named statement. */
export function registerNamedStatement(text: string): void {
  if (names.has(text) || returnsStar(text)) return;
  names.set(text, `stepgate_${createHash('sha256').update(text, 'utf8').digest('hex').slice(0, 24)}`);
}

/** The name `text` runs under, or undefined (it runs unnamed). */
export function namedStatementFor(text: string): string | undefined {
  return names.get(text);
}

function returnsStar(text: string): boolean {
  return /\b(select|returning)\s+(distinct\s+)?\*/i.test(text) || /"\s*\.\s*\*/.test(text);
}

type QueryFn = (...args: unknown[]) => unknown;

/**
 * Makes `client` run the registered texts as named statements. Kysely's PostgreSQL connection
 * calls `client.query(text, values)`; a registered text becomes `{ name, text, values }`, which
 * pg prepares on this connection the first time and only binds and executes afterwards.
 */
export function useNamedStatements(client: pg.PoolClient): void {
  const query = client.query as unknown as QueryFn;
  const named: QueryFn = function (this: pg.PoolClient, ...args: unknown[]) {
    const [text, values] = args;
    if (typeof text === 'string' && args.length === 2 && Array.isArray(values)) {
      const name = names.get(text);
      if (name !== undefined) return query.call(this, { name, text, values });
    }
    return query.apply(this, args);
  };
  (client as unknown as { query: QueryFn }).query = named;
}
