import type { Policy } from './policy-schema.ts';

/**
 * The demo policies (the same content as config/policies.demo.yaml; a test keeps them equal).
 *
 * Order matters and is fail-safe: the lenient policy has conditions, the strict one after it
 * has none. A request the lenient policy does not clearly match — above the threshold, in
 * another currency, without an amount, or with a malformed amount — falls through to the
 * strict one instead of being let through.
 */
export const DEMO_POLICIES: readonly Policy[] = Object.freeze([
  {
    id: 'small-payments',
    action: 'payment_code.issue',
    priority: 10,
    description: 'Payment codes up to 1,000.00 CNY: any possession factor.',
    when: { amount: { lte: '1000.00', currency: 'CNY' } },
    require: { anyOf: [['webauthn'], ['hardware_otp'], ['totp'], ['sms_otp']] },
    acr: 'urn:stepgate:aal2',
    tokenTtlSeconds: 120,
    maxAgeSeconds: 0,
  },
  {
    id: 'large-payments',
    action: 'payment_code.issue',
    priority: 20,
    description: 'Everything else (above 1,000.00 CNY, another currency, no amount): fingerprint, or hardware token plus password.',
    require: { anyOf: [['webauthn'], ['hardware_otp', 'password']] },
    acr: 'urn:stepgate:aal2',
    tokenTtlSeconds: 120,
    maxAgeSeconds: 0,
  },
  {
    id: 'offline-seed',
    action: 'payment_code.offline_seed',
    priority: 10,
    description: 'An offline seed mints codes without asking again: only a device-bound fingerprint credential.',
    require: { anyOf: [['webauthn']] },
    acr: 'urn:stepgate:aal3',
    tokenTtlSeconds: 120,
    maxAgeSeconds: 0,
  },
] satisfies Policy[]);
