import type { Kysely } from 'kysely';

// Hardware OTP tokens (issue 6): the inventory, its import history, and the per-user
// throttle on self-service binding.
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('hardware_token_imports')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('actor', 'text', (c) => c.notNull())
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('file_name', 'text', (c) => c.notNull())
    .addColumn('file_sha256', 'text', (c) => c.notNull())
    .addColumn('format', 'text', (c) => c.notNull())
    .addColumn('encryption', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('token_count', 'integer', (c) => c.notNull())
    .addColumn('problem_count', 'integer', (c) => c.notNull())
    .addColumn('error_code', 'text')
    .execute();
  await db.schema.createIndex('hardware_token_imports_created').on('hardware_token_imports').column('created_at').execute();

  await db.schema
    .createTable('hardware_tokens')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('serial', 'text', (c) => c.notNull().unique())
    .addColumn('manufacturer', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('model', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('algorithm', 'text', (c) => c.notNull())
    .addColumn('digits', 'integer', (c) => c.notNull())
    .addColumn('period_seconds', 'integer', (c) => c.notNull())
    .addColumn('seed_sealed', 'text')
    .addColumn('counter', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('drift_steps', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.references('users.id').onDelete('set null'))
    .addColumn('factor_id', 'text')
    .addColumn('valid_from', 'bigint')
    .addColumn('valid_until', 'bigint')
    .addColumn('import_id', 'text', (c) => c.notNull().references('hardware_token_imports.id'))
    .addColumn('bind_failures', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addColumn('assigned_at', 'bigint')
    .execute();
  await db.schema.createIndex('hardware_tokens_state').on('hardware_tokens').columns(['state', 'serial']).execute();
  await db.schema.createIndex('hardware_tokens_user').on('hardware_tokens').column('user_id').execute();
  await db.schema.createIndex('hardware_tokens_import').on('hardware_tokens').column('import_id').execute();
  await db.schema.createIndex('hardware_tokens_factor').on('hardware_tokens').column('factor_id').execute();

  await db.schema
    .createTable('hardware_token_bind_throttle')
    .addColumn('user_id', 'text', (c) => c.primaryKey().references('users.id').onDelete('cascade'))
    .addColumn('failures', 'integer', (c) => c.notNull())
    .addColumn('locked_until', 'bigint')
    .addColumn('last_failed_at', 'bigint', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('hardware_token_bind_throttle').execute();
  await db.schema.dropTable('hardware_tokens').execute();
  await db.schema.dropTable('hardware_token_imports').execute();
}
