export { createHardwareOtpFactor, factorSeedAad, unsealFactorSeed, type HardwareOtpFactor, type HardwareOtpInput, type HardwareOtpChange, type HardwareOtpFactorOptions } from './hardware-otp-factor.ts';
export { parseHardwareOtpParams, withinValidity, type HardwareOtpParams } from './token-params.ts';
