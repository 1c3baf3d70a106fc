export { createHardwareOtpFactor, factorSeedAad, tokenChallengeKey, unsealFactorSeed, type HardwareOtpFactor, type HardwareOtpInput, type HardwareOtpChange, type HardwareOtpFactorOptions } from './hardware-otp-factor.ts';
export { parseHardwareOtpParams, withBindingChallenge, withinValidity, type HardwareOtpParams } from './token-params.ts';
