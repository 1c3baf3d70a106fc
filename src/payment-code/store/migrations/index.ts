import type { Migration } from 'kysely/migration';
import * as m001 from './001-initial.ts';

/** The payment-code service's own migrations. Ordered, append-only: never edit one that shipped. */
export const migrations: Record<string, Migration> = {
  '001-initial': m001,
};
