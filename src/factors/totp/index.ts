export { checkTotpCode, normaliseTotpCode, type TotpCheck } from './check-totp-code.ts';
export { createTotpFactor, MIN_TOTP_SECRET_BYTES, openTotpSecret, sealTotpSecret, totpSecretAad, type TotpChange, type TotpFactor, type TotpFactorDeps, type TotpInput } from './totp-factor.ts';
export { newTotpSecret, otpauthUri, qrImages, type OtpauthUriInput, type QrImages } from './totp-enrolment.ts';
export { parseTotpParams, secretLengthFor, type TotpParamConstraint, type TotpParams, totpParamsAllowed } from './totp-params.ts';
