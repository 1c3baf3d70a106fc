import type { Migration } from 'kysely/migration';
import * as m001 from './001-foundation.ts';
import * as m010 from './010-signing-keys.ts';
import * as m011 from './011-clients.ts';
import * as m012 from './012-stepups.ts';
import * as m013 from './013-factor-challenges.ts';
import * as m014 from './014-rate-limits.ts';
import * as m016 from './016-master-key-check.ts';
import * as m020 from './020-one-recovery-code-set.ts';
import * as m025 from './025-sms.ts';
import * as m026 from './026-sms-enrolment.ts';
import * as m030 from './030-hardware-tokens.ts';
import * as m031 from './031-token-challenges.ts';
import * as m040 from './040-webauthn-credentials.ts';
import * as m041 from './041-session-device.ts';
import * as m042 from './042-notification-outbox.ts';
import * as m043 from './043-known-devices.ts';
import * as m044 from './044-token-resync-throttle.ts';
import * as m045 from './045-audit-log-rowid.ts';
import * as m046 from './046-token-assign-throttle.ts';

/** Ordered, append-only. Never edit a migration that has shipped; add a new one. */
export const migrations: Record<string, Migration> = {
  '001-foundation': m001,
  '010-signing-keys': m010,
  '011-clients': m011,
  '012-stepups': m012,
  '013-factor-challenges': m013,
  '014-rate-limits': m014,
  '016-master-key-check': m016,
  '020-one-recovery-code-set': m020,
  '025-sms': m025,
  '026-sms-enrolment': m026,
  '030-hardware-tokens': m030,
  '031-token-challenges': m031,
  '040-webauthn-credentials': m040,
  '041-session-device': m041,
  '042-notification-outbox': m042,
  '043-known-devices': m043,
  '044-token-resync-throttle': m044,
  '045-audit-log-rowid': m045,
  '046-token-assign-throttle': m046,
};
