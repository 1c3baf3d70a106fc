import type { Clock } from '../clock.ts';
import type { Db } from '../store/database.ts';
import type { SmsMessage, SmsSender, SmsSendResult } from './sms-sender.ts';

/** Outbox rows older than this are pruned on the next send: it is a development aid, not an archive. */
const KEEP_MS = 24 * 3600 * 1000;

/**
 * Development provider: the message is stored in `sms_outbox` and shown at /dev/outbox;
 * nothing leaves the machine. Production mode refuses it (src/config/load-config.ts),
 * because the stored text contains the code in clear.
 */
export function createOutboxSender(options: { db: Db; clock: Clock }): SmsSender {
  return {
    provider: 'outbox',
    async send(message: SmsMessage): Promise<SmsSendResult> {
      const nowMs = options.clock.now().getTime();
      await options.db.deleteFrom('sms_outbox').where('created_at', '<', nowMs - KEEP_MS).execute();
      await options.db
        .insertInto('sms_outbox')
        .values({ id: message.id, to_number: message.to, locale: message.locale, purpose: message.purpose, text: message.text, created_at: nowMs })
        .execute();
      return { providerMessageId: message.id };
    },
  };
}
