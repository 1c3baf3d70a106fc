import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('stepups')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('client_id', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('context', 'text', (c) => c.notNull())
    .addColumn('amount', 'text')
    .addColumn('currency', 'text')
    .addColumn('binding_message', 'text')
    .addColumn('redirect_uri', 'text')
    .addColumn('state', 'text')
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('policy_id', 'text', (c) => c.notNull())
    .addColumn('policy_version', 'integer', (c) => c.notNull())
    .addColumn('requirement', 'text', (c) => c.notNull())
    .addColumn('acr', 'text', (c) => c.notNull())
    .addColumn('token_ttl_seconds', 'integer', (c) => c.notNull())
    .addColumn('max_age_seconds', 'integer', (c) => c.notNull())
    .addColumn('ticket_hash', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('max_attempts', 'integer', (c) => c.notNull())
    .addColumn('proven', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('amr', 'text', (c) => c.notNull().defaultTo('[]'))
    .addColumn('version', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addColumn('completed_at', 'bigint')
    .addColumn('auth_time', 'bigint')
    .addColumn('token_issued_at', 'bigint')
    .addColumn('token_jti', 'text')
    .addColumn('last_polled_at', 'bigint')
    .addColumn('poll_interval_seconds', 'integer', (c) => c.notNull())
    .execute();
  // Velocity conditions count a user's completed step-ups per action in a time window.
  await db.schema.createIndex('stepups_velocity').on('stepups').columns(['user_id', 'action', 'completed_at']).execute();

  await db.schema
    .createTable('policy_sets')
    .addColumn('version', 'integer', (c) => c.primaryKey())
    .addColumn('document', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('created_by', 'text', (c) => c.notNull())
    .addColumn('comment', 'text', (c) => c.notNull().defaultTo(''))
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('policy_sets').execute();
  await db.schema.dropTable('stepups').execute();
}
