import { boundAmountProblem, comparedAmountProblem, currencyProblem, type MoneyProblem } from '../verifier/index.ts';
import { PaymentCodeError } from './errors.ts';

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

function refuse(problem: MoneyProblem, pointers: { amount: string; currency: string }): PaymentCodeError {
  return new PaymentCodeError(problem.code, { invalidParams: [{ pointer: pointers[problem.field], reason: problem.reason }] });
}

/**
 * A wallet's `amountLimit` and `currency`: they become the step-up binding verbatim, so they
 * obey the gateway's rule (src/verifier/money.ts) — an ISO 4217 currency with minor units and
 * the amount with exactly its decimals ("120.00" CNY, "120" JPY). Refused here, before the
 * gateway is asked, with the gateway's codes.
 */
export function assertBindableMoney(amount: string, currency: string, pointers: { amount: string; currency: string }): void {
  const problem = boundAmountProblem(amount, currency);
  if (problem !== undefined) throw refuse(problem, pointers);
}

/** A redemption amount in the authorised currency: fewer decimals are fine ("99.5"), more are not. */
export function assertComparableAmount(amount: string, currency: string, pointer: string): void {
  const problem = comparedAmountProblem(amount, currency);
  if (problem !== undefined) throw refuse(problem, { amount: pointer, currency: pointer });
}

/** A currency the acquirer names: a real one (it is compared with the authorised one). */
export function assertCurrency(currency: string, pointer: string): void {
  const problem = currencyProblem(currency);
  if (problem !== undefined) throw refuse(problem, { amount: pointer, currency: pointer });
}
