import { displayTextProblem } from './display-text.ts';
import { boundAmountProblem, currencyProblem } from './money.ts';

/**
 * The rules every bound context obeys, the same ones the gateway applies when the step-up is
 * created (it imports them from here): money spelt canonically in an ISO 4217 currency
 * (./money.ts), and every string — the payee first — free of invisible and bidirectional
 * characters and in Unicode NFC (./display-text.ts), so a payee that looks like another one
 * is the same bytes or no binding at all. The verifier checks them on the context the user approved, after the exact
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
  for (const [field, value] of Object.entries(context)) {
    if (field === 'type' || typeof value !== 'string') continue;
    const problem = displayTextProblem(value);
    if (problem !== undefined) return { field, reason: problem };
  }
  return undefined;
}
