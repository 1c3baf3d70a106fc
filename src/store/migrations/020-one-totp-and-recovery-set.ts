import { type Kysely, sql } from 'kysely';

// A user has at most one active authenticator app and one recovery-code set. The index makes
// that hold under concurrency too (two racing confirmations or regenerations on two gateway
// processes: the second insert/activation fails instead of leaving two live sets).
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createIndex('factors_one_active_totp_recovery')
    .on('factors')
    .columns(['user_id', 'type'])
    .unique()
    .where(sql.raw<boolean>("status = 'active' and type in ('totp', 'recovery_code')"))
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('factors_one_active_totp_recovery').execute();
}
