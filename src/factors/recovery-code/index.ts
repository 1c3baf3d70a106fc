export { createRecoveryCodeFactor, type RecoveryCodeChange, type RecoveryCodeFactor, type RecoveryCodeInput } from './recovery-code-factor.ts';
export { generateRecoveryCodes, normaliseRecoveryCode, RECOVERY_CODE_LENGTH, type RecoveryCodeSet, remainingCodes, useRecoveryCode } from './recovery-code-set.ts';
