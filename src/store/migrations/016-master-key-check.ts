import type { Kysely } from 'kysely';

/**
 * One known value sealed under the master key: start-up and /readyz unseal it to prove the
 * configured key is the one the database's secrets are sealed under (crypto/master-key-check.ts).
 * Registered in sealed-columns.ts, so `keys rotate-master` re-seals it with everything else.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('master_key_check')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('sealed', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('master_key_check').execute();
}
