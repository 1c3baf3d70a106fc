/**
 * Money amounts as decimal strings, compared exactly. Amounts never pass through a
 * floating-point number: `0.1 + 0.2` must not decide whether a payment needs a fingerprint.
 *
 * Accepted syntax: `^-?\d{1,15}(\.\d{1,6})?$` — no exponent, no `+`, no thousands separators,
 * no blanks. `"1000"` and `"1000.00"` are the same amount.
 */

/** The fixed scale every amount is held at: 10^6 (micro-units). */
export const DECIMAL_SCALE = 6;
const SCALE_FACTOR = 10n ** BigInt(DECIMAL_SCALE);

export const DECIMAL_PATTERN = /^-?\d{1,15}(\.\d{1,6})?$/;

export interface Decimal {
  /** The amount × 10^6, exact. */
  readonly units: bigint;
  /** How many fraction digits the text carried (0–6); used only to print results alike. */
  readonly fractionDigits: number;
}

/** Totals (sums of many amounts) may have more integer digits than one amount. */
const TOTAL_PATTERN = /^-?\d{1,30}(\.\d{1,6})?$/;

/**
 * Parses a decimal string; `null` when it is not one (never throws). `total: true` accepts up
 * to 30 integer digits, for sums the caller computed.
 */
export function parseDecimal(text: unknown, options: { total?: boolean } = {}): Decimal | null {
  const pattern = options.total === true ? TOTAL_PATTERN : DECIMAL_PATTERN;
  if (typeof text !== 'string' || !pattern.test(text)) return null;
  const negative = text.startsWith('-');
  const body = negative ? text.slice(1) : text;
  const [whole = '0', fraction = ''] = body.split('.');
  const units = BigInt(whole) * SCALE_FACTOR + BigInt(fraction.padEnd(DECIMAL_SCALE, '0'));
  return { units: negative ? -units : units, fractionDigits: fraction.length };
}

export function isDecimalString(text: unknown): text is string {
  return parseDecimal(text) !== null;
}

/** -1, 0 or 1. */
export function compareDecimals(a: Decimal, b: Decimal): -1 | 0 | 1 {
  return a.units < b.units ? -1 : a.units > b.units ? 1 : 0;
}

/** The amount without its sign: what a velocity limit charges for a negative amount (a refund, say). */
export function absDecimal(d: Decimal): Decimal {
  return d.units < 0n ? { units: -d.units, fractionDigits: d.fractionDigits } : d;
}

export function addDecimals(a: Decimal, b: Decimal): Decimal {
  return { units: a.units + b.units, fractionDigits: Math.max(a.fractionDigits, b.fractionDigits) };
}

/** Prints with the decimal's own number of fraction digits (`1100.00`, `5`, `-0.5`). */
export function formatDecimal(d: Decimal): string {
  const negative = d.units < 0n;
  const abs = negative ? -d.units : d.units;
  const whole = abs / SCALE_FACTOR;
  const fraction = (abs % SCALE_FACTOR).toString().padStart(DECIMAL_SCALE, '0');
  // Keep the digits the inputs had, plus any non-zero ones beyond (never lose value).
  const trimmed = fraction.replace(/0+$/, '');
  const digits = Math.max(d.fractionDigits, trimmed.length);
  const text = digits === 0 ? whole.toString() : `${whole}.${fraction.slice(0, digits)}`;
  return negative ? `-${text}` : text;
}

/**
 * Sums decimal strings. `null` when any of them is not a decimal string. `magnitudes: true`
 * adds each amount without its sign — how the velocity condition totals a user's recent
 * step-ups: a negative amount (a refund, or an attacker's "-5000.00") moved money too and
 * must never lower the total and so buy room for more payments under the weaker factor.
 */
export function sumDecimalStrings(texts: readonly unknown[], options: { magnitudes?: boolean } = {}): string | null {
  let total: Decimal = { units: 0n, fractionDigits: 0 };
  for (const t of texts) {
    const d = parseDecimal(t, { total: true });
    if (d === null) return null;
    total = addDecimals(total, options.magnitudes === true ? absDecimal(d) : d);
  }
  return formatDecimal(total);
}
