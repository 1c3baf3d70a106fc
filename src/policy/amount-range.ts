import { compareDecimals, type Decimal, parseDecimal } from './decimal.ts';
import type { AmountCondition } from './policy-schema.ts';

/** An amount condition's bounds as one interval; `null` ends are unbounded. */
export interface AmountRange {
  lower: { value: Decimal; inclusive: boolean } | null;
  upper: { value: Decimal; inclusive: boolean } | null;
}

type Bound = NonNullable<AmountRange['lower']>;

function tighterLower(a: Bound | null, b: Bound): Bound {
  if (a === null) return b;
  const c = compareDecimals(a.value, b.value);
  if (c !== 0) return c > 0 ? a : b;
  return a.inclusive ? b : a;
}

function tighterUpper(a: Bound | null, b: Bound): Bound {
  if (a === null) return b;
  const c = compareDecimals(a.value, b.value);
  if (c !== 0) return c < 0 ? a : b;
  return a.inclusive ? b : a;
}

/** The interval of an amount condition; `null` when a bound is not a decimal (schema not applied). */
export function amountRangeOf(cond: AmountCondition): AmountRange | null {
  const range: AmountRange = { lower: null, upper: null };
  const bounds: [string | undefined, 'lower' | 'upper' | 'both', boolean][] = [
    [cond.gt, 'lower', false],
    [cond.gte, 'lower', true],
    [cond.lt, 'upper', false],
    [cond.lte, 'upper', true],
    [cond.eq, 'both', true],
  ];
  for (const [text, side, inclusive] of bounds) {
    if (text === undefined) continue;
    const value = parseDecimal(text);
    if (value === null) return null;
    if (side !== 'upper') range.lower = tighterLower(range.lower, { value, inclusive });
    if (side !== 'lower') range.upper = tighterUpper(range.upper, { value, inclusive });
  }
  return range;
}

/** No amount satisfies the range (e.g. gt 100 and lt 50, or gt 100 and lte 100). */
export function isEmptyRange(r: AmountRange): boolean {
  if (r.lower === null || r.upper === null) return false;
  const c = compareDecimals(r.lower.value, r.upper.value);
  return c > 0 || (c === 0 && !(r.lower.inclusive && r.upper.inclusive));
}

/** Every amount in `inner` is also in `outer`. */
export function rangeContains(outer: AmountRange, inner: AmountRange): boolean {
  if (isEmptyRange(inner)) return true;
  if (outer.lower !== null) {
    if (inner.lower === null) return false;
    const c = compareDecimals(inner.lower.value, outer.lower.value);
    if (c < 0 || (c === 0 && inner.lower.inclusive && !outer.lower.inclusive)) return false;
  }
  if (outer.upper !== null) {
    if (inner.upper === null) return false;
    const c = compareDecimals(inner.upper.value, outer.upper.value);
    if (c > 0 || (c === 0 && inner.upper.inclusive && !outer.upper.inclusive)) return false;
  }
  return true;
}
