import { maskedPaymentCodeConfig } from '../payment-code/config.ts';
import type { Command } from './command.ts';

export const configCheckCommand: Command = {
  name: ['config', 'check'],
  summary: 'Validate the configuration and print it with secrets masked.',
  usage: 'stepgate config check [--config FILE]',
  options: {},
  async run(args) {
    const config = args.config();
    const masked = {
      ...config,
      secrets: { masterKey: config.secrets.masterKey === '' ? '' : '***' },
      paymentCode: maskedPaymentCodeConfig(config.paymentCode),
    };
    args.out(JSON.stringify(masked, null, 2));
    return 0;
  },
};
