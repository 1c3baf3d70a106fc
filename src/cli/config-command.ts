import { maskSecrets } from '../config/mask-secrets.ts';
import type { Command } from './command.ts';

export const configCheckCommand: Command = {
  name: ['config', 'check'],
  summary: 'Validate the configuration and print it with secrets masked.',
  usage: 'stepgate config check [--config FILE]',
  options: {},
  async run(args) {
    const config = args.config();
    args.out(JSON.stringify(maskSecrets(config), null, 2));
    return 0;
  },
};
