/**
 * Where a relying service remembers the `jti`s it has accepted. The one operation is an
 * atomic insert-if-absent: under any concurrency (threads, processes, hosts sharing the
 * database) exactly one `consume` of a given jti returns true.
 */
export interface ReplayStore {
  /**
   * Records `jti` as used until `expiresAt` (after which the token is refused as expired anyway,
   * so the entry may be pruned). Returns true on first use, false when it was already used.
   * Throws when the store cannot answer; the verifier then fails closed.
   */
  consume(jti: string, expiresAt: Date): Promise<boolean>;
}

/** Argument checks shared by the stores (misuse is a TypeError, not a replay verdict). */
export function assertConsumeArguments(jti: unknown, expiresAt: unknown): void {
  if (typeof jti !== 'string' || jti.length === 0) throw new TypeError('jti must be a non-empty string');
  if (!(expiresAt instanceof Date) || Number.isNaN(expiresAt.getTime())) throw new TypeError('expiresAt must be a valid Date');
}

/** How often (in clock time) stores delete expired entries by default. */
export const DEFAULT_PRUNE_INTERVAL_SECONDS = 60;

/** SQL identifiers we interpolate (table and schema names) must be plain lowercase names. */
export function assertSqlIdentifier(value: string, label: string): void {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(value)) throw new TypeError(`${label} must match /^[a-z_][a-z0-9_]{0,62}$/`);
}
