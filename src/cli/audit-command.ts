import { verifyAuditChain } from '../audit/audit-log.ts';
import { openConfiguredStore } from '../gateway.ts';
import type { Command } from './command.ts';

export const auditVerifyCommand: Command = {
  name: ['audit', 'verify'],
  summary: 'Check the audit log hash chain; exit 1 naming the first broken row.',
  usage: [
    'stepgate audit verify [--json] [--config FILE]',
    '',
    '  Exit 0: the chain is intact (prints the row count and head hash).',
    '  Exit 1: the chain is broken (prints the first broken seq and why) or unreadable.',
  ].join('\n'),
  options: {
    json: { type: 'boolean' },
  },
  async run(args) {
    const store = await openConfiguredStore(args.config());
    try {
      // Read-only: no migration, so verifying never changes the database it inspects.
      const result = await verifyAuditChain(store.db);
      if (args.values.json === true) args.out(JSON.stringify(result));
      else if (result.ok) args.out(`audit chain intact: ${result.rows} rows, head ${result.headHash}`);
      else args.out(`audit chain BROKEN at seq ${result.brokenSeq}: ${result.reason} (${result.rows} rows verified before it)`);
      return result.ok ? 0 : 1;
    } catch (err) {
      args.err(`stepgate audit verify: cannot read the audit log (${(err as Error).message}); run stepgate migrate first?`);
      return 1;
    } finally {
      await store.close();
    }
  },
};
