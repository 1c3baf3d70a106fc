import { isAppError } from '../errors/app-error.ts';
import { issuePasswordReset, type Operator, resetUserFactors } from '../flows/admin-users.ts';
import { findUserByUsername } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';
import { cliActor, listOption, openCliGateway } from './cli-support.ts';
import { type Command, type CommandArgs, requireStringOption, UsageError } from './command.ts';

/**
 * Helpdesk operations from the host, with the powers of an administrator (whoever runs the
 * CLI on the server can read the database anyway). Audited with the OS account as actor.
 */

function operator(): Operator {
  return { userId: cliActor(), roles: ['admin'], ip: null, requestId: null };
}

function reasonOf(args: CommandArgs): string {
  const reason = requireStringOption(args, 'reason').trim();
  if (reason.length < 3 || reason.length > 500) throw new UsageError('--reason must say why (3 to 500 characters)');
  return reason;
}

async function withUser(args: CommandArgs, body: (gw: Gateway, userId: string) => Promise<number>): Promise<number> {
  const username = requireStringOption(args, 'username');
  reasonOf(args); // usage errors before the database is opened
  const gw = await openCliGateway(args.config());
  try {
    const user = await findUserByUsername(gw, username);
    if (user === undefined) {
      args.err(`stepgate: not_found: no user named ${JSON.stringify(username)}`);
      return 1;
    }
    return await body(gw, user.id);
  } catch (err) {
    if (!isAppError(err)) throw err;
    args.err(`stepgate: ${err.code}: ${err.detail ?? err.title}`);
    return 1;
  } finally {
    await gw.close();
  }
}

export const usersResetPasswordCommand: Command = {
  name: ['users', 'reset-password'],
  summary: 'Issue a one-time password-reset link for a user (the user sets the new password).',
  usage: [
    'stepgate users reset-password --username NAME --reason TEXT [--json] [--config FILE]',
    '',
    '  Prints the link once (valid admin.passwordResetLinkSeconds; an older link of the user',
    '  stops working). Hand it to the user over a channel you trust: whoever opens it sets the',
    '  password. Setting it ends every session of the user and lifts the login lock.',
    '  --json  print {"reset_url": …, "expires_at": …}',
  ].join('\n'),
  options: { username: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' } },
  async run(args) {
    return withUser(args, async (gw, userId) => {
      const link = await issuePasswordReset(gw, operator(), userId, reasonOf(args));
      if (args.values.json === true) args.out(JSON.stringify({ reset_url: link.url, expires_at: link.expiresAt.toISOString() }));
      else {
        args.out(`One-time password-reset link (valid until ${link.expiresAt.toISOString()}):`);
        args.out(`  ${link.url}`);
      }
      return 0;
    });
  },
};

export const usersResetFactorsCommand: Command = {
  name: ['users', 'reset-factors'],
  summary: "Remove a user's factors (all but the password, or --types) and end the user's sessions.",
  usage: [
    'stepgate users reset-factors --username NAME --reason TEXT [--types totp,sms_otp] [--json] [--config FILE]',
    '',
    '  Each removal is audited (factor.removed) with your OS account and the reason, and one',
    '  user.factors_reset event lists them. The password is not removed: use reset-password.',
  ].join('\n'),
  options: { username: { type: 'string' }, reason: { type: 'string' }, types: { type: 'string' }, json: { type: 'boolean' } },
  async run(args) {
    const types = listOption(args, 'types');
    return withUser(args, async (gw, userId) => {
      const result = await resetUserFactors(gw, operator(), userId, reasonOf(args), types);
      if (args.values.json === true) args.out(JSON.stringify({ removed: result.removed, sessions_ended: result.sessionsEnded }));
      else {
        args.out(result.removed.length === 0 ? 'no factors to remove' : `removed ${result.removed.length} factor(s): ${result.removed.map((r) => `${r.type} ${r.id}`).join(', ')}`);
        args.out(`ended ${result.sessionsEnded} session(s)`);
      }
      return 0;
    });
  },
};
