import { type Kysely, sql } from 'kysely';

// A user has at most one recovery-code set. The index makes that hold under concurrency too
// (two racing regenerations on two gateway processes: the second insert fails instead of
// leaving two live sets, so "regenerate invalidates the old set" holds).
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createIndex('factors_one_recovery_code_set')
    .on('factors')
    .columns(['user_id', 'type'])
    .unique()
    .where(sql.raw<boolean>("type = 'recovery_code'"))
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('factors_one_recovery_code_set').execute();
}
