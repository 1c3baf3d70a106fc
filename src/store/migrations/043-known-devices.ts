import type { Kysely } from 'kysely';

/**
 * The browsers each user has signed in from (src/flows/known-devices.ts), recognised by a
 * random device cookie stored here only as its SHA-256: a sign-in from a browser the user
 * never used before is audited as `login.new_device` and, by default, notified. Nothing is
 * decided on it — it lets no one skip a factor.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('known_devices')
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('device_hash', 'text', (c) => c.notNull())
    .addColumn('user_agent', 'text')
    .addColumn('first_seen_at', 'bigint', (c) => c.notNull())
    .addColumn('last_seen_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('known_devices_pk', ['user_id', 'device_hash'])
    .execute();
  await db.schema.createIndex('known_devices_last_seen').on('known_devices').column('last_seen_at').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('known_devices').execute();
}
