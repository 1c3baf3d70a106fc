import { openCliGateway, cliActor } from './cli-support.ts';
import { type Command, requireStringOption, stringOption, UsageError } from './command.ts';
import { revokeSigningKey } from '../flows/signing-keys.ts';
import type { SigningAlg } from '../stepup/signing-keys.ts';

/** A step-up signing kid: the RFC 7638 SHA-256 thumbprint, 43 base64url characters. */
const SIGNING_KID_SHAPE = /[A-Za-z0-9_-]{43}/;

export const keysRotateCommand: Command = {
  name: ['keys', 'rotate'],
  summary: 'Make a new step-up signing key: published at once, signing after one refresh interval; the old one stays published until its tokens expire.',
  usage: 'stepgate keys rotate [--alg ES256|EdDSA] [--json] [--config FILE]',
  options: { alg: { type: 'string' }, json: { type: 'boolean' } },
  async run(args) {
    const alg = stringOption(args, 'alg');
    if (alg !== undefined && alg !== 'ES256' && alg !== 'EdDSA') throw new UsageError('--alg must be ES256 or EdDSA');
    const gw = await openCliGateway(args.config());
    try {
      const result = await gw.keys.rotate(alg as SigningAlg | undefined, async (tx, rotated) => {
        await gw.audit.append(tx, {
          type: 'signing_key.rotated',
          actor: cliActor(),
          data: { kid: rotated.kid, retiredKid: rotated.retiredKid ?? null, alg: alg ?? gw.config.stepup.signingAlg },
        });
      });
      if (args.values.json === true) {
        args.out(JSON.stringify({ kid: result.kid, retired_kid: result.retiredKid ?? null, retired_published_until: result.publishUntil?.toISOString() ?? null }));
      } else {
        args.out(`new active key ${result.kid}`);
        if (result.retiredKid !== undefined) args.out(`retired ${result.retiredKid}: published until ${result.publishUntil?.toISOString()}, signs nothing`);
        args.out(`published now; gateways sign with it from ${gw.keys.activationDelaySeconds} s from now (so every JWKS has it first)`);
      }
      return 0;
    } finally {
      await gw.close();
    }
  },
};

export const keysListCommand: Command = {
  name: ['keys', 'list'],
  summary: 'List the published step-up signing keys (kid, alg, status, publication window).',
  usage: 'stepgate keys list [--json] [--config FILE]',
  options: { json: { type: 'boolean' } },
  async run(args) {
    const gw = await openCliGateway(args.config());
    try {
      const keys = await gw.keys.publishedKeys();
      if (args.values.json === true) {
        args.out(JSON.stringify(keys.map((k) => ({ kid: k.kid, alg: k.alg, status: k.status, created_at: k.createdAt.toISOString(), publish_until: k.publishUntil?.toISOString() ?? null }))));
      } else {
        for (const k of keys) args.out(`${k.kid}  ${k.alg}  ${k.status}  created ${k.createdAt.toISOString()}${k.publishUntil === null ? '' : `  published until ${k.publishUntil.toISOString()}`}`);
      }
      return 0;
    } finally {
      await gw.close();
    }
  },
};

export const keysRevokeCommand: Command = {
  name: ['keys', 'revoke'],
  summary: 'Withdraw a compromised step-up signing key at once: out of the JWKS now, never used again; if it was the active key, a new one signs from now on.',
  usage: 'stepgate keys revoke KID --reason TEXT [--json] [--config FILE]',
  options: { reason: { type: 'string' }, json: { type: 'boolean' } },
  positionals: 1,
  positionalPattern: SIGNING_KID_SHAPE,
  async run(args) {
    if (args.positionals.length !== 1) throw new UsageError('give exactly one kid (stepgate keys list shows them)');
    const kid = args.positionals[0] as string;
    const reason = requireStringOption(args, 'reason').trim();
    if (reason.length < 3 || reason.length > 500) throw new UsageError('--reason must say why (3 to 500 characters)');
    const gw = await openCliGateway(args.config());
    try {
      const result = await revokeSigningKey(gw, kid, { actor: cliActor(), reason });
      if (result === undefined) {
        args.err(`stepgate keys revoke: no published signing key ${kid} (stepgate keys list shows them); nothing was changed`);
        return 1;
      }
      if (args.values.json === true) {
        args.out(JSON.stringify({ revoked_kid: result.kid, was_active: result.wasActive, new_kid: result.newKid ?? null }));
      } else {
        args.out(`revoked ${result.kid}: removed from the JWKS, signs nothing`);
        if (result.newKid !== undefined) args.out(`new active key ${result.newKid}: signs from now on`);
        args.out(`gateways stop using it within ${gw.keys.activationDelaySeconds} s; relying services at their next JWKS refresh`);
      }
      return 0;
    } finally {
      await gw.close();
    }
  },
};
