/**
 * What people type for a one-time code, as the ASCII digits codes are compared in:
 * full-width digits (what a Chinese IME types by default) folded by NFKC, and the spaces and
 * hyphens apps and tokens group digits with dropped. Not a string, or longer than anyone
 * types a code: '' (matches nothing). SMS codes are read the same way (normaliseSmsCode).
 */
export const MAX_CODE_INPUT_LENGTH = 64;

export function normaliseOtpInput(input: unknown): string {
  if (typeof input !== 'string' || input.length > MAX_CODE_INPUT_LENGTH) return '';
  return input.normalize('NFKC').replace(/[\s-]/g, '');
}
