import { maskedPaymentCodeConfig } from '../payment-code/config.ts';
import type { Command } from './command.ts';

export const configCheckCommand: Command = {
  name: ['config', 'check'],
  summary: 'Validate the configuration and print it with secrets masked.',
  usage: 'stepgate config check [--config FILE]',
  options: {},
  async run(args) {
    const config = args.config();
    const mask = (v: string) => (v === '' ? '' : '***');
    const { sms } = config;
    const masked = {
      ...config,
      secrets: { masterKey: mask(config.secrets.masterKey) },
      paymentCode: maskedPaymentCodeConfig(config.paymentCode),
      sms: {
        ...sms,
        twilio: { ...sms.twilio, authToken: mask(sms.twilio.authToken) },
        aliyun: { ...sms.aliyun, accessKeySecret: mask(sms.aliyun.accessKeySecret) },
        webhook: { ...sms.webhook, secret: mask(sms.webhook.secret) },
      },
    };
    args.out(JSON.stringify(masked, null, 2));
    return 0;
  },
};
