import { sql } from 'kysely';
import type { AuditLog } from '../audit/audit-log.ts';
import type { Store } from '../store/database.ts';
import { SEALED_COLUMNS, type SealedColumn } from '../store/sealed-columns.ts';
import { type MasterKey, SealError, Sealer } from './sealer.ts';

/** A sealed value that does not unseal: the rotation is abandoned and nothing is changed. */
export class RotationError extends Error {
  readonly code = 'rotation_failed';
  readonly table: string;
  readonly column: string;
  readonly rowId: string;
  constructor(column: SealedColumn, rowId: string, reason: string) {
    super(`${column.table}.${column.column} of row ${rowId} ${reason}`);
    this.name = 'RotationError';
    this.table = column.table;
    this.column = column.column;
    this.rowId = rowId;
  }
}

export interface RotateMasterKeyOptions {
  store: Store;
  audit: AuditLog;
  /** The key values are sealed under today. */
  currentKey: MasterKey;
  /** Older keys some values may still be sealed under (they are re-sealed too). */
  previousKeys?: MasterKey[];
  newKey: MasterKey;
  /** Who rotated, for the audit event. */
  actor: string;
  /** Defaults to every registered sealed column. */
  columns?: readonly SealedColumn[];
}

export interface RotationResult {
  resealed: number;
  fromKeyId: string;
  toKeyId: string;
  columns: { table: string; column: string; resealed: number }[];
}

/**
 * Re-seals every sealed value under `newKey` in ONE transaction: either all values move to
 * the new key or, when any value fails to unseal, none does. Values already under the new
 * key (a repeated run) are re-sealed as well, so the command is safe to retry.
 */
export async function rotateMasterKey(options: RotateMasterKeyOptions): Promise<RotationResult> {
  const { store, currentKey, newKey } = options;
  if (newKey.id === currentKey.id) throw new TypeError('the new master key is the current one');
  const unsealer = new Sealer(currentKey, [newKey, ...(options.previousKeys ?? [])]);
  const sealer = new Sealer(newKey);
  const columns = options.columns ?? SEALED_COLUMNS;
  // Rows stay locked until commit on PostgreSQL, so a concurrent writer cannot slip a value
  // sealed under the old key in between; SQLite transactions here hold the write lock.
  const lock = store.dialect === 'postgres' ? sql` for update` : sql``;

  return store.db.transaction().execute(async (tx) => {
    const perColumn: RotationResult['columns'] = [];
    let total = 0;
    for (const column of columns) {
      const idRef = sql.ref(column.idColumn);
      const valueRef = sql.ref(column.column);
      const { rows } = await sql<{ id: string; sealed: string }>`
        select ${idRef} as id, ${valueRef} as sealed from ${sql.table(column.table)}
        where ${valueRef} is not null order by ${idRef}${lock}`.execute(tx);
      let count = 0;
      for (const row of rows) {
        const aad = column.aad(row.id);
        let plaintext: Buffer;
        try {
          plaintext = unsealer.unseal(row.sealed, aad);
        } catch (err) {
          if (err instanceof SealError) throw new RotationError(column, row.id, `does not unseal: ${err.message}`);
          throw err;
        }
        const resealed = sealer.seal(plaintext, aad);
        plaintext.fill(0);
        const result = await sql`
          update ${sql.table(column.table)} set ${valueRef} = ${resealed}
          where ${idRef} = ${row.id} and ${valueRef} = ${row.sealed}`.execute(tx);
        if (result.numAffectedRows !== 1n) throw new RotationError(column, row.id, 'changed during the rotation');
        count += 1;
      }
      perColumn.push({ table: column.table, column: column.column, resealed: count });
      total += count;
    }
    await options.audit.append(tx, {
      type: 'master_key.rotated',
      actor: options.actor,
      data: { fromKeyId: currentKey.id, toKeyId: newKey.id, resealed: total, columns: perColumn },
    });
    return { resealed: total, fromKeyId: currentKey.id, toKeyId: newKey.id, columns: perColumn };
  });
}
