export { hotp, totp, timeStep, findOtp, OTP_ALGORITHMS, type OtpAlgorithm } from './hotp.ts';
export { base32Encode, base32Decode } from './base32.ts';
