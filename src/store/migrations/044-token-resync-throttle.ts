import type { Kysely } from 'kysely';

/**
 * Resynchronisation attempts per hardware token (helpdesk and self-service alike), charged
 * before the two codes are compared: after hardwareTokens.resyncMaxFailures failures in a
 * row the token's resync is refused until resync_locked_until. A counter of its own, not the
 * verification's factors.failures: resync is what unlocks a token that verification locked.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('hardware_tokens').addColumn('resync_failures', 'integer', (c) => c.notNull().defaultTo(0)).execute();
  await db.schema.alterTable('hardware_tokens').addColumn('resync_locked_until', 'bigint').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('hardware_tokens').dropColumn('resync_locked_until').execute();
  await db.schema.alterTable('hardware_tokens').dropColumn('resync_failures').execute();
}
