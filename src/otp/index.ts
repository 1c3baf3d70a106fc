export { hotp, totp, timeStep, findOtp, OTP_ALGORITHMS, type OtpAlgorithm } from './hotp.ts';
export { base32Encode, base32Decode } from './base32.ts';
export { MAX_CODE_INPUT_LENGTH, normaliseOtpInput } from './code-input.ts';
export { sm3Otp, sm3Generator, sm3Id, sm3TimeFactor, type Sm3Factors } from './sm3.ts';
export {
  matchConsecutiveCodes,
  matchTokenCode,
  bindingChallenge,
  stepUpChallenge,
  tokenCodeGenerator,
  tokenStep,
  wasRecentlyUsed,
  type TokenAlgorithm,
  type TokenCodeParams,
  type TokenKind,
  type TokenMatch,
  type TokenState,
  type TokenWindow,
} from './token-codes.ts';
