import { createHash } from 'node:crypto';
import type { DialectName, Executor, Tx } from '../store/database.ts';
import type { Clock } from '../clock.ts';
import { FixedSql } from '../store/fixed-sql.ts';
import { newId } from '../crypto/ids.ts';

/**
 * The tamper-evident audit log. Each row stores the SHA-256 of its canonical form, which
 * includes the previous row's hash, so editing, deleting or reordering any row breaks the
 * chain from there on (`stepgate audit verify`).
 *
 * Appends are serialised by locking the chain head (`meta.audit_head`): `FOR UPDATE` on
 * PostgreSQL, the database write lock (BEGIN IMMEDIATE) on SQLite.
 */
export const GENESIS_HASH = '0'.repeat(64);

export interface AuditEvent {
  /** `<entity>.<past-tense-verb>`, e.g. `login.succeeded`, `user.created`. */
  type: string;
  actor?: string | null;
  subject?: string | null;
  ip?: string | null;
  requestId?: string | null;
  /** Event details. Never codes, passwords, seeds or whole tokens. */
  data?: Record<string, unknown>;
}

export interface AuditRow {
  seq: number;
  at: number;
  type: string;
  actor: string | null;
  subject: string | null;
  ip: string | null;
  request_id: string | null;
  data: string;
  prev_hash: string;
  hash: string;
}

/** Deterministic JSON: object keys sorted, no whitespace. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/**
 * A text column as the database will give it back: a lone surrogate (not Unicode, so not
 * storable as UTF-8) becomes U+FFFD on either database, so it is replaced before the row is
 * hashed — otherwise the stored row would no longer match its hash and read as tampered with.
 * (`data` needs nothing: JSON escapes a lone surrogate as `\\udXXX`.)
 */
function storable<T extends string>(value: T): T;
function storable(value: string | null | undefined): string | null;
function storable(value: string | null | undefined): string | null {
  return value === undefined || value === null ? null : value.toWellFormed();
}

export function rowHash(row: Omit<AuditRow, 'hash'>): string {
  const canonical = canonicalJson({
    seq: row.seq,
    at: row.at,
    type: row.type,
    actor: row.actor,
    subject: row.subject,
    ip: row.ip,
    request_id: row.request_id,
    data: row.data,
    prev_hash: row.prev_hash,
  });
  return createHash('sha256').update(canonical, 'utf8').digest('hex');
}

interface Head {
  seq: number;
  hash: string;
}

function parseHead(value: string): Head {
  if (value === '0') return { seq: 0, hash: GENESIS_HASH };
  const parsed = JSON.parse(value) as Head;
  return parsed;
}

// Every append runs these three; fixed statements skip the query builder (see FixedSql).
const READ_HEAD = new FixedSql<{ value: string }>(`select "value" from "meta" where "key" = 'audit_head'`);
const READ_HEAD_FOR_UPDATE = new FixedSql<{ value: string }>(`select "value" from "meta" where "key" = 'audit_head' for update`);
const AUDIT_COLUMNS = '("seq", "at", "type", "actor", "subject", "ip", "request_id", "data", "prev_hash", "hash")';
const ROW_PLACEHOLDERS = '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';
// One INSERT for the events a transaction appends together (a step-up completion writes two
// or three): texts for 1..MAX_ROWS_PER_INSERT rows, constants of this module.
const MAX_ROWS_PER_INSERT = 4;
const INSERT_TEXTS = Array.from(
  { length: MAX_ROWS_PER_INSERT },
  (_, i) => `insert into "audit_log" ${AUDIT_COLUMNS} values ${Array.from({ length: i + 1 }, () => ROW_PLACEHOLDERS).join(', ')}`,
);
const INSERT_ROWS = INSERT_TEXTS.map((text) => new FixedSql(text));
const WRITE_HEAD = new FixedSql(`update "meta" set "value" = ? where "key" = 'audit_head'`);
// PostgreSQL: the rows and the new head in one statement (a data-modifying WITH), one round
// trip instead of two; the head row is already locked by READ_HEAD_FOR_UPDATE. SQLite has no
// data-modifying WITH and no round trip to save: it runs INSERT_ROWS then WRITE_HEAD.
const INSERT_ROWS_AND_HEAD_PG = INSERT_TEXTS.map(
  (insert) => new FixedSql(`with "appended" as (${insert}) update "meta" set "value" = ? where "key" = 'audit_head'`),
);

export interface AuditLogOptions {
  /**
   * Event types that are also queued for the user's security notifications
   * (src/notifications/): a row in `notification_outbox`, in the same transaction, for each
   * such event that has a subject (the user it is about). Empty or absent: none.
   */
  notify?: ReadonlySet<string>;
}

export class AuditLog {
  readonly #dialect: DialectName;
  readonly #clock: Clock;
  readonly #notify: ReadonlySet<string>;

  constructor(dialect: DialectName, clock: Clock, options: AuditLogOptions = {}) {
    this.#dialect = dialect;
    this.#clock = clock;
    this.#notify = options.notify ?? new Set();
  }

  /** Appends inside the caller's transaction when given one, so the event commits with the change. */
  async append(executor: Executor, event: AuditEvent): Promise<AuditRow> {
    const [row] = await this.appendAll(executor, [event]);
    return row!;
  }

  /**
   * Appends several events in this order, as consecutive rows of the chain: the same rows as
   * one append after the other in the same transaction, with the head read and written once.
   */
  async appendAll(executor: Executor, events: readonly AuditEvent[]): Promise<AuditRow[]> {
    if (events.length === 0) return [];
    if (executor.isTransaction) return this.#appendIn(executor as Tx, events);
    return executor.transaction().execute((tx) => this.#appendIn(tx, events));
  }

  async #appendIn(tx: Tx, events: readonly AuditEvent[]): Promise<AuditRow[]> {
    const { rows: heads } = await (this.#dialect === 'postgres' ? READ_HEAD_FOR_UPDATE : READ_HEAD).run(tx, []);
    const headRow = heads[0];
    if (headRow === undefined) throw new Error('audit chain head (meta.audit_head) is missing');
    let head = parseHead(headRow.value);
    const rows: AuditRow[] = [];
    for (const event of events) {
      const base = {
        seq: head.seq + 1,
        at: this.#clock.now().getTime(),
        type: storable(event.type),
        actor: storable(event.actor),
        subject: storable(event.subject),
        ip: storable(event.ip),
        request_id: storable(event.requestId),
        data: canonicalJson(event.data ?? {}),
        prev_hash: head.hash,
      };
      const row: AuditRow = { ...base, hash: rowHash(base) };
      rows.push(row);
      head = { seq: row.seq, hash: row.hash };
    }
    const headValue = JSON.stringify(head);
    for (let i = 0; i < rows.length; i += MAX_ROWS_PER_INSERT) {
      const chunk = rows.slice(i, i + MAX_ROWS_PER_INSERT);
      const values = chunk.flatMap((r) => [r.seq, r.at, r.type, r.actor, r.subject, r.ip, r.request_id, r.data, r.prev_hash, r.hash]);
      if (this.#dialect === 'postgres' && i + MAX_ROWS_PER_INSERT >= rows.length) {
        await INSERT_ROWS_AND_HEAD_PG[chunk.length - 1]!.run(tx, [...values, headValue]);
      } else {
        await INSERT_ROWS[chunk.length - 1]!.run(tx, values);
      }
    }
    if (this.#dialect !== 'postgres') await WRITE_HEAD.run(tx, [headValue]);
    if (this.#notify.size > 0) await this.#queueNotifications(tx, rows);
    return rows;
  }

  /** The events the operator notifies users of, queued with them (one commit: never one without the other). */
  async #queueNotifications(tx: Tx, rows: readonly AuditRow[]): Promise<void> {
    const due = rows.filter((r) => this.#notify.has(r.type) && r.subject !== null);
    if (due.length === 0) return;
    await tx
      .insertInto('notification_outbox')
      .values(
        due.map((r) => ({
          id: newId('ntf'),
          audit_seq: r.seq,
          type: r.type,
          user_id: r.subject as string,
          ip: r.ip,
          at: r.at,
          data: r.data,
          state: 'pending' as const,
          next_attempt_at: r.at,
        })),
      )
      .execute();
  }
}

export type ChainResult =
  | { ok: true; rows: number; headHash: string }
  | { ok: false; rows: number; brokenSeq: number; reason: 'hash_mismatch' | 'prev_hash_mismatch' | 'sequence_gap' | 'head_mismatch' };

async function readHead(executor: Executor): Promise<Head> {
  const row = await executor.selectFrom('meta').select('value').where('key', '=', 'audit_head').executeTakeFirst();
  return parseHead(row?.value ?? '0');
}

/**
 * Walks the chain in pages and reports the first broken row. The chain head is read FIRST
 * and only rows up to it are checked, so events appended while the walk runs (a live
 * gateway keeps appending) are not mistaken for tampering; afterwards, rows beyond the head
 * must be explained by a head that moved on, else they were written around the chain.
 */
export async function verifyAuditChain(executor: Executor, pageSize = 1000): Promise<ChainResult> {
  let prevHash = GENESIS_HASH;
  let expectedSeq = 1;
  let rows = 0;
  let head = await readHead(executor);
  for (;;) {
    while (expectedSeq <= head.seq) {
      const page = await executor
        .selectFrom('audit_log')
        .selectAll()
        .where('seq', '>=', expectedSeq)
        .where('seq', '<=', head.seq)
        .orderBy('seq')
        .limit(pageSize)
        .execute();
      if (page.length === 0) break;
      for (const raw of page) {
        // PostgreSQL bigints arrive as numbers (see store/database.ts); be explicit anyway.
        const row = { ...raw, seq: Number(raw.seq), at: Number(raw.at) };
        if (row.seq !== expectedSeq) return { ok: false, rows, brokenSeq: expectedSeq, reason: 'sequence_gap' };
        if (row.prev_hash !== prevHash) return { ok: false, rows, brokenSeq: row.seq, reason: 'prev_hash_mismatch' };
        const { hash, ...rest } = row;
        if (rowHash(rest) !== hash) return { ok: false, rows, brokenSeq: row.seq, reason: 'hash_mismatch' };
        prevHash = hash;
        expectedSeq += 1;
        rows += 1;
      }
    }
    // A deleted tail leaves a valid prefix; the head still names the last row written.
    if (rows < head.seq) return { ok: false, rows, brokenSeq: rows + 1, reason: 'head_mismatch' };
    if (prevHash !== head.hash) return { ok: false, rows, brokenSeq: head.seq, reason: 'head_mismatch' };
    const beyond = await executor.selectFrom('audit_log').select('seq').where('seq', '>', head.seq).limit(1).executeTakeFirst();
    if (beyond === undefined) return { ok: true, rows, headHash: prevHash };
    const moved = await readHead(executor);
    if (moved.seq <= head.seq) return { ok: false, rows, brokenSeq: head.seq + 1, reason: 'head_mismatch' };
    head = moved;
  }
}
