import type { Kysely } from 'kysely';

/**
 * What a session was opened from, for the user's list of signed-in devices ("my security" ›
 * signed-in devices, GET /v1/me/sessions): the browser's User-Agent (at most 256 characters,
 * control characters removed) and the client address. Descriptive only: nothing is decided
 * on them. Sessions opened before this migration have neither.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('sessions').addColumn('user_agent', 'text').execute();
  await db.schema.alterTable('sessions').addColumn('ip', 'text').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('sessions').dropColumn('ip').execute();
  await db.schema.alterTable('sessions').dropColumn('user_agent').execute();
}
