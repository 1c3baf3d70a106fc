import type { Kysely } from 'kysely';

/**
 * Challenges of challenge factors (an SMS code sent, a WebAuthn challenge issued) inside a
 * step-up: one row per step-up and factor type. A resend replaces `state` but keeps
 * `attempts`, so resending never buys more guesses.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('factor_challenges')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('stepup_id', 'text', (c) => c.notNull().references('stepups.id').onDelete('cascade'))
    .addColumn('factor_type', 'text', (c) => c.notNull())
    // The factor the challenge was issued for (SMS: the phone), or null (WebAuthn: any of the user's credentials).
    .addColumn('factor_id', 'text')
    // JSON written by the factor module: hashes and public data only. Null: nothing usable (send failed).
    .addColumn('state', 'text')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_attempts', 'integer', (c) => c.notNull())
    .addColumn('sends', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('last_sent_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addColumn('consumed_at', 'bigint')
    .execute();
  await db.schema.createIndex('factor_challenges_stepup_type').on('factor_challenges').columns(['stepup_id', 'factor_type']).unique().execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('factor_challenges').execute();
}
