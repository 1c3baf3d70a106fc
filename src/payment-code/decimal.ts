/**
 * Money as decimal strings, compared exactly (never through a float). The syntax is the
 * gateway's, so a context the gateway accepted is one this service can compare:
 * `^\d{1,15}(\.\d{1,6})?$` — non-negative here, no exponent, no separators.
 */
export const AMOUNT_PATTERN = /^\d{1,15}(\.\d{1,6})?$/;

/** The amount in micro-units, or null when it is not an amount. */
export function amountUnits(text: unknown): bigint | null {
  if (typeof text !== 'string' || !AMOUNT_PATTERN.test(text)) return null;
  const [whole = '0', fraction = ''] = text.split('.');
  return BigInt(whole) * 1_000_000n + BigInt(fraction.padEnd(6, '0'));
}

/** a ≤ b, for two valid amounts. */
export function amountAtMost(a: string, b: string): boolean {
  const x = amountUnits(a);
  const y = amountUnits(b);
  if (x === null || y === null) throw new TypeError('amountAtMost: not amounts');
  return x <= y;
}
