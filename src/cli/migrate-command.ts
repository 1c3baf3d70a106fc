import { openConfiguredStore } from '../gateway.ts';
import type { Command } from './command.ts';

export const migrateCommand: Command = {
  name: ['migrate'],
  summary: 'Apply database migrations (serve also applies them on start).',
  usage: 'stepgate migrate [--config FILE]',
  options: {},
  async run(args) {
    const store = await openConfiguredStore(args.config());
    try {
      const applied = await store.migrate();
      args.out(applied.length === 0 ? `${store.dialect}: up to date` : `${store.dialect}: applied ${applied.join(', ')}`);
      return 0;
    } finally {
      await store.close();
    }
  },
};
