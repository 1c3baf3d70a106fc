import type { Kysely } from 'kysely';

/**
 * Security notifications waiting for delivery (src/notifications/): one row per audit event
 * the operator asked to hear about (`notifications.events`), written in the same transaction
 * as the audit row — so an event is notified exactly when it happened — and delivered by the
 * gateway processes' delivery loop to the operator's webhook, which tells the user.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('notification_outbox')
    .addColumn('id', 'text', (c) => c.primaryKey())
    // The audit row it reports (audit_log.seq).
    .addColumn('audit_seq', 'bigint', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull())
    .addColumn('ip', 'text')
    .addColumn('at', 'bigint', (c) => c.notNull())
    // The audit row's data (JSON; never secrets).
    .addColumn('data', 'text', (c) => c.notNull())
    // pending → delivered | failed (gave up after notifications.maxAttempts).
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
    // A delivery under way: who claimed it, until when (another process takes it over after).
    .addColumn('claim', 'text')
    .addColumn('claimed_until', 'bigint')
    .addColumn('delivered_at', 'bigint')
    .addColumn('last_error', 'text')
    .execute();
  await db.schema.createIndex('notification_outbox_due').on('notification_outbox').columns(['state', 'next_attempt_at']).execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('notification_outbox').execute();
}
