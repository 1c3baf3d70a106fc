import { createHash } from 'node:crypto';
import type { VerifierClock } from '../verifier/index.ts';
import type { PcDialect, PcExecutor, PcTx } from './store/database.ts';
import type { EventsTable } from './store/schema.ts';

/**
 * The service's own tamper-evident event log: each row stores the SHA-256 of its canonical
 * form including the previous row's hash (the same construction as the gateway's audit log).
 * Appends are serialised on the chain head (`pc_meta.events_head`): FOR UPDATE on
 * PostgreSQL, the write lock of BEGIN IMMEDIATE on SQLite. Events are
 * `<entity>.<past-tense-verb>`; their data never holds codes, seeds or tokens.
 */
export const GENESIS_HASH = '0'.repeat(64);

export interface PaymentCodeEvent {
  type: string;
  actor?: string | null;
  subject?: string | null;
  requestId?: string | null;
  data?: Record<string, unknown>;
}

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

export function eventHash(row: Omit<EventsTable, 'hash'>): string {
  const { seq, at, type, actor, subject, request_id, data, prev_hash } = row;
  return createHash('sha256').update(canonicalJson({ seq, at, type, actor, subject, request_id, data, prev_hash }), 'utf8').digest('hex');
}

interface Head {
  seq: number;
  hash: string;
}

function parseHead(value: string): Head {
  return value === '0' ? { seq: 0, hash: GENESIS_HASH } : (JSON.parse(value) as Head);
}

export class EventLog {
  readonly #dialect: PcDialect;
  readonly #clock: VerifierClock;

  constructor(dialect: PcDialect, clock: VerifierClock) {
    this.#dialect = dialect;
    this.#clock = clock;
  }

  /** Appends inside the caller's transaction when given one, so the event commits with the change. */
  async append(executor: PcExecutor, event: PaymentCodeEvent): Promise<EventsTable> {
    if (executor.isTransaction) return this.#appendIn(executor as PcTx, event);
    return executor.transaction().execute((tx) => this.#appendIn(tx, event));
  }

  async #appendIn(tx: PcTx, event: PaymentCodeEvent): Promise<EventsTable> {
    const headRow = await tx
      .selectFrom('pc_meta')
      .select('value')
      .where('key', '=', 'events_head')
      .$if(this.#dialect === 'postgres', (q) => q.forUpdate())
      .executeTakeFirstOrThrow();
    const head = parseHead(headRow.value);
    const base = {
      seq: head.seq + 1,
      at: this.#clock.now().getTime(),
      type: event.type,
      actor: event.actor ?? null,
      subject: event.subject ?? null,
      request_id: event.requestId ?? null,
      data: canonicalJson(event.data ?? {}),
      prev_hash: head.hash,
    };
    const row: EventsTable = { ...base, hash: eventHash(base) };
    await tx.insertInto('pc_events').values(row).execute();
    await tx.updateTable('pc_meta').set({ value: JSON.stringify({ seq: row.seq, hash: row.hash }) }).where('key', '=', 'events_head').execute();
    return row;
  }
}

export type EventChainResult = { ok: true; rows: number } | { ok: false; rows: number; brokenSeq: number; reason: 'hash_mismatch' | 'prev_hash_mismatch' | 'sequence_gap' | 'head_mismatch' };

/** Walks the chain up to the head read first (appends during the walk are not tampering). */
export async function verifyEventChain(executor: PcExecutor, pageSize = 1000): Promise<EventChainResult> {
  const headRow = await executor.selectFrom('pc_meta').select('value').where('key', '=', 'events_head').executeTakeFirst();
  const head = parseHead(headRow?.value ?? '0');
  let prevHash = GENESIS_HASH;
  let expected = 1;
  while (expected <= head.seq) {
    const page = await executor.selectFrom('pc_events').selectAll().where('seq', '>=', expected).where('seq', '<=', head.seq).orderBy('seq').limit(pageSize).execute();
    if (page.length === 0) break;
    for (const raw of page) {
      const row = { ...raw, seq: Number(raw.seq), at: Number(raw.at) };
      if (row.seq !== expected) return { ok: false, rows: expected - 1, brokenSeq: expected, reason: 'sequence_gap' };
      if (row.prev_hash !== prevHash) return { ok: false, rows: expected - 1, brokenSeq: row.seq, reason: 'prev_hash_mismatch' };
      const { hash, ...rest } = row;
      if (eventHash(rest) !== hash) return { ok: false, rows: expected - 1, brokenSeq: row.seq, reason: 'hash_mismatch' };
      prevHash = hash;
      expected += 1;
    }
  }
  const rows = expected - 1;
  if (rows !== head.seq || prevHash !== head.hash) return { ok: false, rows, brokenSeq: rows + 1, reason: 'head_mismatch' };
  return { ok: true, rows };
}
