import { createAdminDirectly } from '../flows/admin-setup.ts';
import { cliActor, openCliGateway } from './cli-support.ts';
import type { Command } from './command.ts';
import { reportCreation, USER_OPTIONS, userInputOf } from './users-command.ts';

export const adminCreateCommand: Command = {
  name: ['admin', 'create'],
  summary: 'Create an administrator directly on the server (voids any pending set-up link).',
  usage: [
    'stepgate admin create --username U [--display-name N] [--groups g1,g2]',
    '                      [--password-env VAR] [--json] [--config FILE]',
    '',
    '  The password is read from the environment variable named by --password-env, or',
    '  prompted for (twice, without echo) on a terminal. It is never taken from the',
    '  command line. Exit 0 created, 1 refused (taken name, weak password…), 2 bad usage.',
  ].join('\n'),
  options: USER_OPTIONS,
  async run(args) {
    const input = await userInputOf(args);
    const gw = await openCliGateway(args.config());
    try {
      return await reportCreation(args, 'admin create', () => createAdminDirectly(gw, input, { actor: cliActor() }));
    } finally {
      await gw.close();
    }
  },
};
