import type { Database } from './schema.ts';

/**
 * Every column that holds a value sealed with the master key (crypto/sealer.ts), with the
 * associated data the value is bound to. `stepgate keys rotate-master` re-seals exactly
 * these, so a new sealed column MUST be listed here or it becomes unreadable after a
 * rotation (the master-key rotation test checks every listed column round-trips).
 */
export interface SealedColumn<T extends keyof Database = keyof Database> {
  table: T;
  /** Primary key column; its value is part of the associated data. */
  idColumn: keyof Database[T] & string;
  /** Nullable text column holding `v1.<keyId>.…` sealed values. */
  column: keyof Database[T] & string;
  /** The associated data the value was sealed with, from the row id. */
  aad(id: string): string;
}

function sealedColumn<T extends keyof Database>(spec: SealedColumn<T>): SealedColumn {
  return spec as unknown as SealedColumn;
}

export const SEALED_COLUMNS: readonly SealedColumn[] = [
  sealedColumn({ table: 'factors', idColumn: 'id', column: 'secret_sealed', aad: (id) => `factors.secret_sealed:${id}` }),
  sealedColumn({ table: 'signing_keys', idColumn: 'kid', column: 'private_sealed', aad: (kid) => `signing_keys.private_sealed:${kid}` }),
  sealedColumn({ table: 'hardware_tokens', idColumn: 'id', column: 'seed_sealed', aad: (id) => `hardware_tokens.seed_sealed:${id}` }),
  sealedColumn({ table: 'master_key_check', idColumn: 'id', column: 'sealed', aad: (id) => `master_key_check.sealed:${id}` }),
];
