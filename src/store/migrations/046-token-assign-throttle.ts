import type { Kysely } from 'kysely';

/**
 * Helpdesk assign/replace attempts (a code read from a token in stock), charged before the
 * code is compared, per token and per acting operator: after hardwareTokens.assignMaxFailures
 * failures in a row on one token, or assignActorMaxFailures by one operator, assignment is
 * refused until the lock time (assignLockSeconds). The per-token count is a column pair of its
 * own (not bind_failures, the self-service per-serial budget, which the helpdesk does not
 * spend); the per-operator count a table keyed by the audit actor (no foreign key: the CLI
 * acts as well).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('hardware_tokens').addColumn('assign_failures', 'integer', (c) => c.notNull().defaultTo(0)).execute();
  await db.schema.alterTable('hardware_tokens').addColumn('assign_locked_until', 'bigint').execute();
  await db.schema
    .createTable('hardware_token_assign_throttle')
    .addColumn('actor', 'text', (c) => c.primaryKey())
    .addColumn('failures', 'integer', (c) => c.notNull())
    .addColumn('locked_until', 'bigint')
    .addColumn('last_charged_at', 'bigint', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('hardware_token_assign_throttle').execute();
  await db.schema.alterTable('hardware_tokens').dropColumn('assign_locked_until').execute();
  await db.schema.alterTable('hardware_tokens').dropColumn('assign_failures').execute();
}
