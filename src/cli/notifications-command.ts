import { listNotifications, requeueFailedNotifications } from '../notifications/delivery.ts';
import { cliActor, listOption, openCliGateway } from './cli-support.ts';
import { type Command, UsageError } from './command.ts';

/** The security-notification queue for operators (docs/notifications.md). */

const STATES = ['pending', 'delivered', 'failed'] as const;

export const notificationsListCommand: Command = {
  name: ['notifications', 'list'],
  summary: 'Show the security-notification queue, newest first.',
  usage: [
    'stepgate notifications list [--state pending|delivered|failed] [--limit N] [--json] [--config FILE]',
    '',
    '  One line per notification: id, state, type, user id, attempts, when it happened, the',
    '  next attempt (pending) or delivery time, and the last error. --limit: 1–1000 (50).',
  ].join('\n'),
  options: { state: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' } },
  async run(args) {
    const state = args.values.state;
    if (state !== undefined && !(STATES as readonly unknown[]).includes(state)) throw new UsageError(`--state must be one of ${STATES.join(', ')}`);
    const limitText = typeof args.values.limit === 'string' ? args.values.limit : '50';
    if (!/^\d{1,4}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > 1000) throw new UsageError('--limit must be a number from 1 to 1000');
    const gw = await openCliGateway(args.config());
    try {
      const rows = await listNotifications(gw, { limit: Number(limitText), ...(state === undefined ? {} : { state: state as (typeof STATES)[number] }) });
      if (args.values.json === true) {
        args.out(JSON.stringify(rows.map((r) => ({ id: r.id, state: r.state, type: r.type, user_id: r.userId, attempts: r.attempts, occurred_at: r.occurredAt.toISOString(), next_attempt_at: r.nextAttemptAt?.toISOString() ?? null, delivered_at: r.deliveredAt?.toISOString() ?? null, last_error: r.lastError }))));
        return 0;
      }
      if (rows.length === 0) args.out('no notifications');
      for (const r of rows) {
        const when = r.state === 'delivered' ? `delivered ${r.deliveredAt?.toISOString()}` : r.state === 'pending' ? `next ${r.nextAttemptAt?.toISOString()}` : 'gave up';
        args.out(`${r.id}  ${r.state.padEnd(9)} ${r.type.padEnd(26)} ${r.userId}  attempts ${r.attempts}  ${r.occurredAt.toISOString()}  ${when}${r.lastError === null ? '' : `  (${r.lastError})`}`);
      }
      return 0;
    } finally {
      await gw.close();
    }
  },
};

export const notificationsRetryCommand: Command = {
  name: ['notifications', 'retry'],
  summary: 'Queue failed security notifications again (after the webhook was fixed).',
  usage: [
    'stepgate notifications retry (--all-failed | --id ID[,ID…]) [--config FILE]',
    '',
    '  Failed notifications become due now with their attempts reset; the gateway processes',
    '  deliver them at their next poll. Audited (notifications.requeued) with the OS account.',
  ].join('\n'),
  options: { id: { type: 'string' }, 'all-failed': { type: 'boolean' } },
  async run(args) {
    const ids = listOption(args, 'id');
    const all = args.values['all-failed'] === true;
    if ((ids === undefined) === !all) throw new UsageError('give exactly one of --all-failed and --id');
    if (ids?.some((id) => !/^ntf_[A-Za-z0-9_-]{1,64}$/.test(id))) throw new UsageError('--id takes notification ids (ntf_…), comma-separated');
    const gw = await openCliGateway(args.config());
    try {
      const moved = await requeueFailedNotifications(gw, all ? 'all' : (ids ?? []), { actor: cliActor() });
      args.out(`${moved} notification${moved === 1 ? '' : 's'} queued again`);
      return 0;
    } finally {
      await gw.close();
    }
  },
};
