import type { Kysely } from 'kysely';

/**
 * GM/T 0021 challenge-response tokens: the length of the challenge Q the token takes on its
 * keypad (PSKC `ChallengeFormat`), or null for tokens that show codes on their own.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('hardware_tokens').addColumn('challenge_length', 'integer').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.alterTable('hardware_tokens').dropColumn('challenge_length').execute();
}
