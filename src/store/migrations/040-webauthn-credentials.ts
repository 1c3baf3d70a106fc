import type { Kysely } from 'kysely';

/**
 * WebAuthn credential ids, unique across all users. The credential itself (public key,
 * signature counter, BE/BS, transports, AAGUID) lives in its `factors` row (type
 * `webauthn`, one row per credential); this table makes the id unique — a credential can
 * belong to one user only (WebAuthn §7.1 step 26) — and lets passkey sign-in find the
 * credential an assertion names without knowing the user.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('webauthn_credentials')
    // base64url credential id, as the browser reports it (`id`).
    .addColumn('credential_id', 'text', (c) => c.primaryKey())
    .addColumn('factor_id', 'text', (c) => c.notNull().unique().references('factors.id').onDelete('cascade'))
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('webauthn_credentials_user').on('webauthn_credentials').column('user_id').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('webauthn_credentials').execute();
}
