import { type Kysely, SqliteAdapter, sql } from 'kysely';

const COLUMNS = sql.raw('"seq", "at", "type", "actor", "subject", "ip", "request_id", "data", "prev_hash", "hash"');

/**
 * SQLite: `audit_log.seq` becomes the table's rowid (`integer primary key`). Declared
 * `bigint primary key` (001), it was an ordinary column with a second b-tree for its primary
 * key (sqlite_autoindex_audit_log_1), which every audit record — every verification, every
 * token — had to update and write to the WAL at its commit. As the rowid, the table itself is
 * ordered by seq: the same lookups and ranges by sequence number (export, chain verification)
 * with one b-tree less to write. Every row is copied as it is (same seq, same columns, so the
 * chain and its hashes are unchanged) and the copy is counted against the original before the
 * original is dropped. The migrator runs this in one transaction that holds SQLite's write lock
 * (see GatewaySqliteAdapter): any failure leaves the old table as it was. It rewrites the whole
 * table: docs/operations.md says how long that takes.
 *
 * PostgreSQL: nothing to do. Its tables are heaps; the primary key index is the one index on
 * seq either way, and there is no rowid to make it.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  if (!(db.getExecutor().adapter instanceof SqliteAdapter)) return;
  await sql`create table "audit_log_rowid" (
    "seq" integer primary key,
    "at" bigint not null,
    "type" text not null,
    "actor" text,
    "subject" text,
    "ip" text,
    "request_id" text,
    "data" text not null,
    "prev_hash" text not null,
    "hash" text not null
  )`.execute(db);
  await sql`insert into "audit_log_rowid" (${COLUMNS}) select ${COLUMNS} from "audit_log" order by "seq"`.execute(db);
  const counts = await sql<{ old: number; copy: number }>`select (select count(*) from "audit_log") as "old", (select count(*) from "audit_log_rowid") as "copy"`.execute(db);
  const row = counts.rows[0];
  if (row === undefined || Number(row.old) !== Number(row.copy)) {
    throw new Error(`045-audit-log-rowid: copied ${row?.copy} audit rows of ${row?.old}; nothing was changed`);
  }
  await sql`drop table "audit_log"`.execute(db);
  await sql`alter table "audit_log_rowid" rename to "audit_log"`.execute(db);
}

export async function down(): Promise<void> {
  // The rowid table holds the same rows and answers the same queries; nothing to undo.
}
