import { OTP_ALGORITHMS, type OtpAlgorithm } from '../../otp/index.ts';

/**
 * The public parameters of one authenticator-app enrolment, stored in `factors.params`
 * (`period` in seconds, the otpauth:// name, which the factor listing shows as it is).
 */
export interface TotpParams {
  algorithm: OtpAlgorithm;
  digits: 6 | 8;
  period: 30 | 60;
}

export const TOTP_PARAM_DIGITS: readonly number[] = [6, 8];
export const TOTP_PARAM_PERIODS: readonly number[] = [30, 60];

/** Reads stored parameters; undefined for anything we would not have written (fail closed). */
export function parseTotpParams(params: Record<string, unknown>): TotpParams | undefined {
  const { algorithm, digits, period } = params;
  if (typeof algorithm !== 'string' || !(OTP_ALGORITHMS as readonly string[]).includes(algorithm)) return undefined;
  if (typeof digits !== 'number' || !TOTP_PARAM_DIGITS.includes(digits)) return undefined;
  if (typeof period !== 'number' || !TOTP_PARAM_PERIODS.includes(period)) return undefined;
  return { algorithm: algorithm as OtpAlgorithm, digits: digits as 6 | 8, period: period as 30 | 60 };
}

/** What a policy (or the configuration) accepts; a missing list accepts every value. */
export interface TotpParamConstraint {
  algorithms?: readonly string[] | undefined;
  digits?: readonly number[] | undefined;
  periodSeconds?: readonly number[] | undefined;
}

export function totpParamsAllowed(params: TotpParams, constraint: TotpParamConstraint | undefined): boolean {
  if (constraint === undefined) return true;
  return (
    (constraint.algorithms === undefined || constraint.algorithms.includes(params.algorithm)) &&
    (constraint.digits === undefined || constraint.digits.includes(params.digits)) &&
    (constraint.periodSeconds === undefined || constraint.periodSeconds.includes(params.period))
  );
}

/** Bytes of a new secret: at least the configured length and the hash's output size (RFC 6238 §1.2 reference keys). */
export function secretLengthFor(algorithm: OtpAlgorithm, configuredBytes: number): number {
  const hashBytes = algorithm === 'SHA512' ? 64 : algorithm === 'SHA256' ? 32 : 20;
  return Math.max(20, configuredBytes, hashBytes);
}
