import { boundAmountProblem, currencyProblem } from './money.ts';

/**
 * The rules every bound context obeys, the same ones the gateway applies when the step-up is
 * created (it imports them from here): money spelt canonically in an ISO 4217 currency
 * (./money.ts). The verifier checks them on the context the user approved, after the exact
 * comparison, so a token that a gateway should never have signed (an older one, a
 * misconfigured one) cannot authorise "10.001 CNY" — the comparison alone would pass it when
 * the relying service's own request carries the same bytes.
 */
export function contextRuleProblem(context: Readonly<Record<string, unknown>>): { field: string; reason: string } | undefined {
  const amount = Object.hasOwn(context, 'amount') ? context.amount : undefined;
  const currency = Object.hasOwn(context, 'currency') ? context.currency : undefined;
  if (amount !== undefined) {
    if (typeof amount !== 'string') return { field: 'amount', reason: 'an amount is a decimal string' };
    const problem = boundAmountProblem(amount, currency);
    if (problem !== undefined) return { field: problem.field, reason: problem.reason };
    if (!/^-?\d{1,15}(\.\d{1,4})?$/.test(amount)) return { field: 'amount', reason: 'an amount is a decimal string such as "120.00"' };
  } else if (currency !== undefined) {
    const problem = currencyProblem(currency);
    if (problem !== undefined) return { field: problem.field, reason: problem.reason };
  }
  return undefined;
}
