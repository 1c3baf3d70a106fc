/**
 * Money in a step-up binding: an amount is a decimal string in the minor units of its ISO 4217
 * currency. One module, imported by the gateway (step-up creation, policies), by the
 * payment-code service and by this verifier, so all three apply the very same rule to the
 * very same bytes.
 *
 * **One spelling per amount.** A bound amount carries exactly as many fraction digits as its
 * currency has minor units — `"10.10"` CNY, `"100"` JPY, `"1.500"` BHD, `"0.0001"` CLF — no
 * leading zeros, no `+`, no exponent, no `"-0.00"`. Nothing is rewritten: a spelling that is
 * not canonical is refused (`amount_not_canonical`), one with more digits than the currency
 * has is refused (`amount_precision_exceeded`), so the string the user approved, the one in the
 * token and the one the relying service compares are the same bytes, and `"10.1"` and
 * `"10.10"` can never be two bindings of one payment. Policy thresholds and redemption amounts
 * are not bindings: they may have fewer digits (`"1000"`), never more.
 */

/**
 * ISO 4217 List One, published 2024-06-25 (the codes and their minor units, `CcyMnrUnts`),
 * plus amendment 179 (XCG, the Caribbean guilder, from 2025-03-31). `null`: the code has no
 * minor unit (N.A. in the list: precious metals, bond-market units, SDR, the testing code XTS
 * and XXX "no currency") — no amount can be bound in it. A code ISO withdraws stays here until
 * the list drops it; update this table with each amendment.
 */
const MINOR_UNITS_SOURCE: Record<string, string> = {
  0: 'BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF',
  2: `AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD
      BTN BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD
      EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR
      IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP
      MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN
      QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB
      TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW
      ZWG`,
  3: 'BHD IQD JOD KWD LYD OMR TND',
  4: 'CLF UYW',
  none: 'XAG XAU XBA XBB XBC XBD XDR XPD XPT XSU XTS XUA XXX',
};

function buildTable(): ReadonlyMap<string, number | null> {
  const table = new Map<string, number | null>();
  for (const [units, codes] of Object.entries(MINOR_UNITS_SOURCE)) {
    for (const code of codes.trim().split(/\s+/)) {
      if (!/^[A-Z]{3}$/.test(code) || table.has(code)) throw new TypeError(`ISO 4217 table: bad or repeated code ${code}`);
      table.set(code, units === 'none' ? null : Number(units));
    }
  }
  return table;
}

/** Code → minor units (0–4), or `null` for a code without a minor unit. */
export const ISO_4217_MINOR_UNITS: ReadonlyMap<string, number | null> = buildTable();

/**
 * The minor units of a currency: a number (0–4), `null` when ISO 4217 defines the code without
 * a minor unit (XAU, XXX…), `undefined` when it is no ISO 4217 code at all.
 */
export function minorUnitsOf(currency: unknown): number | null | undefined {
  if (typeof currency !== 'string') return undefined;
  return ISO_4217_MINOR_UNITS.get(currency);
}

export type MoneyProblemCode = 'currency_unsupported' | 'amount_precision_exceeded' | 'amount_not_canonical';

export interface MoneyProblem {
  code: MoneyProblemCode;
  /** The field at fault: the amount, or the currency. */
  field: 'amount' | 'currency';
  reason: string;
}

/** A currency that can carry an amount: an ISO 4217 code with minor units. */
export function currencyProblem(currency: unknown): MoneyProblem | undefined {
  const units = minorUnitsOf(currency);
  if (units === undefined) return { code: 'currency_unsupported', field: 'currency', reason: 'must be an ISO 4217 currency code such as "CNY"' };
  if (units === null) return { code: 'currency_unsupported', field: 'currency', reason: `${currency as string} has no minor unit in ISO 4217: no amount can be given in it` };
  return undefined;
}

// Loose on purpose: a decimal with any number of fraction digits, so that "10.0000001" is told
// "too many decimals for CNY", not "not a number". Each caller checks its own syntax first.
const AMOUNT_PARTS = /^(-?)(\d+)(?:\.(\d+))?$/;

function digitsWord(units: number): string {
  return units === 0 ? 'no decimals' : units === 1 ? '1 decimal' : `${units} decimals`;
}

function precisionProblem(amount: string, currency: string, units: number): MoneyProblem | undefined {
  const parts = AMOUNT_PARTS.exec(amount);
  if (parts === null) return undefined;
  const fraction = parts[3] ?? '';
  if (fraction.length > units) {
    return { code: 'amount_precision_exceeded', field: 'amount', reason: `${currency} amounts have ${digitsWord(units)} (ISO 4217 minor units): ${JSON.stringify(amount)} has ${fraction.length}` };
  }
  return undefined;
}

/**
 * An amount bound into a step-up (context `amount` with its `currency`): undefined when it is
 * the canonical spelling for the currency, else the problem. The amount's syntax (a decimal
 * string) is the caller's first check; a string that is no decimal at all is not judged here.
 */
export function boundAmountProblem(amount: string, currency: unknown): MoneyProblem | undefined {
  const bad = currencyProblem(currency);
  if (bad !== undefined) return bad;
  const units = minorUnitsOf(currency) as number;
  const code = currency as string;
  const tooMany = precisionProblem(amount, code, units);
  if (tooMany !== undefined) return tooMany;
  const canonical = canonicalAmount(amount, code);
  if (canonical !== undefined && canonical !== amount) {
    return { code: 'amount_not_canonical', field: 'amount', reason: `write ${code} amounts with exactly ${digitsWord(units)} and no leading zeros: ${JSON.stringify(canonical)}` };
  }
  return undefined;
}

/**
 * An amount that is compared, not bound (a policy threshold, a redemption amount): fewer
 * digits than the currency has are fine (`"1000"` CNY), more are not.
 */
export function comparedAmountProblem(amount: string, currency: unknown): MoneyProblem | undefined {
  const bad = currencyProblem(currency);
  if (bad !== undefined) return bad;
  return precisionProblem(amount, currency as string, minorUnitsOf(currency) as number);
}

/**
 * The canonical spelling of an amount in a currency (`"10.1"` CNY → `"10.10"`, `"007"` JPY →
 * `"7"`, `"-0.00"` → `"0.00"`), for a form a person types into; undefined when the text is no
 * decimal, the currency carries no amount, or the text has more digits than the currency (that
 * would need rounding, and rounding money is not this function's decision).
 */
export function canonicalAmount(amount: string, currency: string): string | undefined {
  const units = minorUnitsOf(currency);
  const parts = AMOUNT_PARTS.exec(amount);
  if (typeof units !== 'number' || parts === null) return undefined;
  const [, sign = '', whole = '', fraction = ''] = parts;
  if (fraction.length > units) return undefined;
  const digits = `${whole.replace(/^0+(?=\d)/, '')}${units === 0 ? '' : `.${fraction.padEnd(units, '0')}`}`;
  const zero = /^[0.]+$/.test(digits);
  return sign === '-' && !zero ? `-${digits}` : digits;
}
