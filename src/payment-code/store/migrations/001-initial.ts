import type { Kysely } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('pc_meta')
    .addColumn('key', 'text', (c) => c.primaryKey())
    .addColumn('value', 'text', (c) => c.notNull())
    .execute();
  await db.insertInto('pc_meta' as never).values({ key: 'events_head', value: '0' } as never).execute();

  await db.schema
    .createTable('pc_api_keys')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('role', 'text', (c) => c.notNull())
    .addColumn('key_hash', 'text', (c) => c.notNull().unique())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('revoked_at', 'bigint')
    .execute();

  await db.schema
    .createTable('pc_stepups')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('owner', 'text', (c) => c.notNull())
    .addColumn('action', 'text', (c) => c.notNull())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('context', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('token_sealed', 'text')
    .addColumn('failure', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addColumn('finished_at', 'bigint')
    .execute();
  await db.schema.createIndex('pc_stepups_expires_at').on('pc_stepups').column('expires_at').execute();

  await db.schema
    .createTable('pc_codes')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('code_hmac', 'text', (c) => c.notNull())
    .addColumn('qr_nonce', 'text', (c) => c.notNull().unique())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('owner', 'text', (c) => c.notNull())
    .addColumn('amount_limit', 'text', (c) => c.notNull())
    .addColumn('currency', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('payee', 'text')
    .addColumn('stepup_id', 'text', (c) => c.notNull().unique())
    .addColumn('token_jti', 'text', (c) => c.notNull().unique())
    .addColumn('acr', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('issued_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addColumn('redeemed_at', 'bigint')
    .addColumn('redemption_id', 'text')
    .execute();
  await db.schema.createIndex('pc_codes_subject').on('pc_codes').columns(['subject', 'issued_at']).execute();

  await db.schema
    .createTable('pc_live_codes')
    .addColumn('code_hmac', 'text', (c) => c.primaryKey())
    .addColumn('code_id', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('pc_offline_seeds')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('owner', 'text', (c) => c.notNull())
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('device_id', 'text', (c) => c.notNull())
    .addColumn('slot', 'text', (c) => c.notNull())
    .addColumn('seed_sealed', 'text', (c) => c.notNull())
    .addColumn('amount_limit', 'text', (c) => c.notNull())
    .addColumn('currency', 'text', (c) => c.notNull())
    .addColumn('max_codes', 'integer', (c) => c.notNull())
    .addColumn('codes_used', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('period_seconds', 'integer', (c) => c.notNull())
    .addColumn('failures', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('failure_window', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('stepup_id', 'text', (c) => c.notNull().unique())
    .addColumn('token_jti', 'text', (c) => c.notNull().unique())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .addColumn('revoked_at', 'bigint')
    .execute();
  await db.schema.createIndex('pc_offline_seeds_subject').on('pc_offline_seeds').columns(['subject', 'device_id']).execute();

  await db.schema
    .createTable('pc_device_slots')
    .addColumn('slot', 'text', (c) => c.primaryKey())
    .addColumn('seed_id', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();

  await db.schema
    .createTable('pc_offline_uses')
    .addColumn('seed_id', 'text', (c) => c.notNull())
    .addColumn('step', 'bigint', (c) => c.notNull())
    .addColumn('redemption_id', 'text', (c) => c.notNull())
    .addColumn('used_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('pc_offline_uses_pk', ['seed_id', 'step'])
    .execute();

  await db.schema
    .createTable('pc_redemptions')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('code_id', 'text')
    .addColumn('seed_id', 'text')
    .addColumn('subject', 'text', (c) => c.notNull())
    .addColumn('amount', 'text', (c) => c.notNull())
    .addColumn('currency', 'text', (c) => c.notNull())
    .addColumn('merchant', 'text', (c) => c.notNull())
    .addColumn('acquirer_key_id', 'text', (c) => c.notNull())
    .addColumn('redeemed_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('pc_redemptions_subject').on('pc_redemptions').columns(['subject', 'redeemed_at']).execute();

  await db.schema
    .createTable('pc_signing_keys')
    .addColumn('kid', 'text', (c) => c.primaryKey())
    .addColumn('alg', 'text', (c) => c.notNull())
    .addColumn('private_sealed', 'text', (c) => c.notNull())
    .addColumn('public_jwk', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('retired_at', 'bigint')
    .execute();

  await db.schema
    .createTable('pc_events')
    .addColumn('seq', 'bigint', (c) => c.primaryKey())
    .addColumn('at', 'bigint', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    .addColumn('actor', 'text')
    .addColumn('subject', 'text')
    .addColumn('request_id', 'text')
    .addColumn('data', 'text', (c) => c.notNull())
    .addColumn('prev_hash', 'text', (c) => c.notNull())
    .addColumn('hash', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const table of ['pc_events', 'pc_signing_keys', 'pc_redemptions', 'pc_offline_uses', 'pc_device_slots', 'pc_offline_seeds', 'pc_live_codes', 'pc_codes', 'pc_stepups', 'pc_api_keys', 'pc_meta']) {
    await db.schema.dropTable(table).execute();
  }
}
