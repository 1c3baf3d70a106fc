import { randomUUID } from 'node:crypto';
import type { Config } from '../config/schema.ts';
import type { Gateway } from '../gateway.ts';
import { postWithTimeout } from '../sms/http-post.ts';
import { SmsSendError } from '../sms/sms-sender.ts';
import { WEBHOOK_SIGNATURE_HEADER, webhookSignature } from '../sms/webhook-sender.ts';

/**
 * Security notifications: users are told of changes to their credentials and of suspicious
 * attempts (ASVS 5.0 V6.3.5, V6.3.7) through the operator's own channels — Stepgate has no
 * e-mail or push of its own, and a payment company already reaches its users by app push or
 * SMS. Each audit event whose type is in `notifications.events` is queued in
 * `notification_outbox` in the same transaction as its audit row (src/audit/audit-log.ts), so
 * a change is notified if and only if it committed. Every gateway process runs the delivery
 * loop: it claims due rows with a conditional UPDATE (each row goes to exactly one process at
 * a time; a claim lapses after the timeout, so a process that died mid-delivery leaves it to
 * the others), POSTs each, signed like the SMS webhook, and marks it delivered, or schedules
 * the next attempt (5 s doubling to an hour) until `notifications.maxAttempts`, then marks it
 * failed and logs it. Delivery is at least once: the receiver deduplicates by `id`.
 *
 * The body: `{id, type, occurred_at, user: {id, username}, ip, data, audit_seq}` — `data` is
 * the audit row's, which never holds codes, passwords, seeds or tokens.
 */

/** The event types queued, or none when no webhook is configured (nothing would deliver them). */
export function notifiedEvents(config: Pick<Config, 'notifications'>): ReadonlySet<string> {
  return config.notifications.webhook.url === '' ? new Set() : new Set(config.notifications.events);
}

const BATCH = 20;
const FIRST_RETRY_MS = 5_000;
const LONGEST_RETRY_MS = 3_600_000;
/** Beyond the request timeout, how long a claim keeps other processes off a row. */
const CLAIM_MARGIN_MS = 30_000;
const MAX_ERROR = 200;

/** The wait after the `attempts`-th failed attempt: 5 s, 10 s, 20 s … at most an hour. */
export function retryDelayMs(attempts: number): number {
  return Math.min(LONGEST_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.max(0, attempts - 1));
}

export interface DeliveryRound {
  delivered: number;
  /** Failed this time, tried again later. */
  retried: number;
  /** Given up on (notifications.maxAttempts reached). */
  failed: number;
}

export interface NotificationBody {
  id: string;
  type: string;
  occurred_at: string;
  user: { id: string; username: string | null };
  ip: string | null;
  data: Record<string, unknown>;
  audit_seq: number;
}

function describeFailure(err: unknown): string {
  if (err instanceof SmsSendError) return err.httpStatus === undefined ? err.kind : `${err.kind} (HTTP ${err.httpStatus})`;
  return err instanceof Error ? err.name : 'error';
}

/** One round: claims what is due (at most `limit`), delivers it, records each outcome. */
export async function deliverDueNotifications(gw: Gateway, limit = BATCH): Promise<DeliveryRound> {
  const round: DeliveryRound = { delivered: 0, retried: 0, failed: 0 };
  const { webhook, maxAttempts } = gw.config.notifications;
  if (webhook.url === '') return round;
  const db = gw.store.db;
  const nowMs = gw.clock.now().getTime();
  const claim = randomUUID();
  const due = await db
    .selectFrom('notification_outbox')
    .select('id')
    .where('state', '=', 'pending')
    .where('next_attempt_at', '<=', nowMs)
    .where((eb) => eb.or([eb('claimed_until', 'is', null), eb('claimed_until', '<=', nowMs)]))
    .orderBy('next_attempt_at')
    .limit(limit)
    .execute();
  for (const { id } of due) {
    // Claimed just before it is sent (a slow webhook must not let the claims of the rest of
    // the batch lapse meanwhile). The attempt is counted as it is claimed, before anything is
    // sent: a crash mid-delivery still used it up.
    const atMs = gw.clock.now().getTime();
    const row = await db
      .updateTable('notification_outbox')
      .set((eb) => ({ claim, claimed_until: atMs + webhook.timeoutSeconds * 1000 + CLAIM_MARGIN_MS, attempts: eb('attempts', '+', 1) }))
      .where('id', '=', id)
      .where('state', '=', 'pending')
      .where((eb) => eb.or([eb('claimed_until', 'is', null), eb('claimed_until', '<=', atMs)]))
      .returningAll()
      .executeTakeFirst();
    if (row === undefined) continue; // another process claimed it first
    const user = await db.selectFrom('users').select('username').where('id', '=', row.user_id).executeTakeFirst();
    const body: NotificationBody = {
      id: row.id,
      type: row.type,
      occurred_at: new Date(Number(row.at)).toISOString(),
      user: { id: row.user_id, username: user?.username ?? null },
      ip: row.ip,
      data: JSON.parse(row.data) as Record<string, unknown>,
      audit_seq: Number(row.audit_seq),
    };
    let failure: string | undefined;
    try {
      const text = JSON.stringify(body);
      const timestamp = Math.floor(gw.clock.now().getTime() / 1000);
      const result = await postWithTimeout(
        webhook.url,
        { headers: { 'content-type': 'application/json', [WEBHOOK_SIGNATURE_HEADER]: webhookSignature(webhook.secret, timestamp, text) }, body: text },
        webhook.timeoutSeconds * 1000,
      );
      if (result.status < 200 || result.status > 299) failure = `HTTP ${result.status}`;
    } catch (err) {
      failure = describeFailure(err);
    }
    const doneMs = gw.clock.now().getTime();
    const attempts = Number(row.attempts);
    const mine = db.updateTable('notification_outbox').where('id', '=', row.id).where('claim', '=', claim);
    if (failure === undefined) {
      await mine.set({ state: 'delivered', delivered_at: doneMs, claim: null, claimed_until: null, last_error: null }).execute();
      round.delivered += 1;
      gw.metrics.notifications.inc({ outcome: 'delivered' });
    } else if (attempts >= maxAttempts) {
      await mine.set({ state: 'failed', claim: null, claimed_until: null, last_error: failure.slice(0, MAX_ERROR) }).execute();
      round.failed += 1;
      gw.metrics.notifications.inc({ outcome: 'failed' });
      gw.logger.warn({ notification: row.id, type: row.type, attempts, error: failure }, 'security notification given up: the webhook did not accept it');
    } else {
      await mine.set({ next_attempt_at: doneMs + retryDelayMs(attempts), claim: null, claimed_until: null, last_error: failure.slice(0, MAX_ERROR) }).execute();
      round.retried += 1;
      gw.metrics.notifications.inc({ outcome: 'retried' });
    }
  }
  return round;
}

/** Starts the loop (every `notifications.pollSeconds`); the returned function stops it. Errors are logged, never thrown. */
export function startNotificationDelivery(gw: Gateway): () => Promise<void> {
  if (gw.config.notifications.webhook.url === '') return async () => undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  const tick = () => {
    if (running !== undefined || stopped) return;
    running = (async () => {
      try {
        // Drain what is due, a batch at a time, unless a batch delivered nothing.
        for (;;) {
          const r = await deliverDueNotifications(gw);
          if (stopped || r.delivered + r.retried + r.failed < BATCH) break;
        }
      } catch (err) {
        gw.logger.error({ err }, 'security notification delivery failed');
      } finally {
        running = undefined;
      }
    })();
  };
  const timer = setInterval(tick, gw.config.notifications.pollSeconds * 1000);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await running;
  };
}

export interface NotificationView {
  id: string;
  type: string;
  userId: string;
  state: 'pending' | 'delivered' | 'failed';
  attempts: number;
  occurredAt: Date;
  nextAttemptAt: Date | null;
  deliveredAt: Date | null;
  lastError: string | null;
}

/** The queue, newest first (for operators: `stepgate notifications list`). */
export async function listNotifications(gw: Gateway, filter: { state?: NotificationView['state']; limit: number }): Promise<NotificationView[]> {
  let q = gw.store.db.selectFrom('notification_outbox').selectAll().orderBy('audit_seq', 'desc').limit(filter.limit);
  if (filter.state !== undefined) q = q.where('state', '=', filter.state);
  const rows = await q.execute();
  return rows.map((r) => ({
    id: r.id,
    type: r.type,
    userId: r.user_id,
    state: r.state,
    attempts: Number(r.attempts),
    occurredAt: new Date(Number(r.at)),
    nextAttemptAt: r.state === 'pending' ? new Date(Number(r.next_attempt_at)) : null,
    deliveredAt: r.delivered_at === null ? null : new Date(Number(r.delivered_at)),
    lastError: r.last_error,
  }));
}

/**
 * Puts failed notifications back in the queue, due now with their attempts reset (after the
 * webhook was fixed): all of them, or those named. Audited; answers how many.
 */
export async function requeueFailedNotifications(gw: Gateway, ids: readonly string[] | 'all', who: { actor: string }): Promise<number> {
  return gw.store.db.transaction().execute(async (tx) => {
    let q = tx
      .updateTable('notification_outbox')
      .set({ state: 'pending', attempts: 0, next_attempt_at: gw.clock.now().getTime(), claim: null, claimed_until: null })
      .where('state', '=', 'failed');
    if (ids !== 'all') {
      if (ids.length === 0) return 0;
      q = q.where('id', 'in', [...ids]);
    }
    const moved = Number((await q.executeTakeFirst()).numUpdatedRows);
    await gw.audit.append(tx, { type: 'notifications.requeued', actor: who.actor, subject: null, data: { count: moved, ...(ids === 'all' ? { all: true } : { ids: [...ids] }) } });
    return moved;
  });
}
