export * from './sms-sender.ts';
export { configuredSmsProvider, createSmsSender } from './create-sms-sender.ts';
export { chargeSendCaps, type CapScope, type CapSubject, type CapsOutcome, type CapWindow, type SmsCaps } from './send-caps.ts';
export { maskPhoneNumber, parseMobileNumber, type MobileNumber, type PhoneProblem } from './phone-number.ts';
export { approvalSummary, enrolmentSummary, renderSmsText, sanitiseForSms, type Approval } from './sms-text.ts';
export { signAcs3 } from './acs3-signature.ts';
export { webhookSignature, WEBHOOK_SIGNATURE_HEADER } from './webhook-sender.ts';
export { smsLocaleOf, type DeliveredSms, type DeliverSms, type SmsDelivery } from './sms-delivery.ts';
