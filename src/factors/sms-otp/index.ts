export { createSmsOtpFactor, phoneOf, type SmsOtpDeps, type SmsOtpFactor, type SmsOtpInput, type SmsOtpParams } from './sms-otp-factor.ts';
export { generateSmsCode, normaliseSmsCode, SMS_CODE_DIGITS, smsCodeMac, smsCodeMatches, type SmsCodeBinding } from './sms-code.ts';
