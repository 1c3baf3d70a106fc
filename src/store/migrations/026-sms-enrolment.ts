import type { Kysely } from 'kysely';

/**
 * The ownership code of a phone being enrolled: one row per pending sms_otp factor, deleted
 * with it. Like a step-up challenge: a resend replaces `code_mac` but keeps `attempts`.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('sms_enrolment_codes')
    .addColumn('factor_id', 'text', (c) => c.primaryKey().references('factors.id').onDelete('cascade'))
    .addColumn('user_id', 'text', (c) => c.notNull())
    // HMAC of the code (bound to the factor and user); null while sending or after a failed send.
    .addColumn('code_mac', 'text')
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_attempts', 'integer', (c) => c.notNull())
    .addColumn('sends', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('last_sent_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addColumn('consumed_at', 'bigint')
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('sms_enrolment_codes').execute();
}
