import { maskSecrets } from '../config/mask-secrets.ts';
import { maskedPaymentCodeConfig } from '../payment-code/config.ts';
import type { Command } from './command.ts';

export const configCheckCommand: Command = {
  name: ['config', 'check'],
  summary: 'Validate the configuration and print it with secrets masked.',
  usage: 'stepgate config check [--config FILE]',
  options: {},
  async run(args) {
    const config = args.config();
    // The payment-code section's own masking, then the generic one over everything (by key
    // name and URL userinfo), so options added later are masked too.
    args.out(JSON.stringify(maskSecrets({ ...config, paymentCode: maskedPaymentCodeConfig(config.paymentCode) }), null, 2));
    return 0;
  },
};
