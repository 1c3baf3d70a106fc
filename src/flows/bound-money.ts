import { AppError } from '../errors/app-error.ts';
import { boundAmountProblem, currencyProblem } from '../verifier/money.ts';

/**
 * The money in a step-up context (`amount` and `currency`, after the schema): the currency an
 * ISO 4217 code with minor units, the amount spelt canonically for it — exactly the
 * currency's decimals (`"10.10"` CNY, `"100"` JPY, `"1.500"` BHD), refused rather than
 * rewritten, so the token carries the bytes that were sent and one amount has one binding
 * (src/verifier/money.ts). A `currency` without an amount must still be a real one: policies
 * compare it.
 */
export function assertBoundMoney(context: Readonly<Record<string, unknown>>, pointerPrefix = '/context'): void {
  const { amount, currency } = context;
  const problem = typeof amount === 'string' ? boundAmountProblem(amount, currency) : currency === undefined ? undefined : currencyProblem(currency);
  if (problem === undefined) return;
  throw new AppError(problem.code, { invalidParams: [{ pointer: `${pointerPrefix}/${problem.field}`, reason: problem.reason }] });
}
