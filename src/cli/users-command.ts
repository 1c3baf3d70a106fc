import { isAppError } from '../errors/app-error.ts';
import { createUser, ROLES, type Role, type UserView } from '../flows/users.ts';
import { userToJson } from '../http/auth-router.ts';
import { cliActor, listOption, openCliGateway, readNewPassword } from './cli-support.ts';
import { type CommandArgs, requireStringOption, stringOption, UsageError } from './command.ts';
import type { Command } from './command.ts';

/** Options shared by `users create` and `admin create`. */
export const USER_OPTIONS = {
  username: { type: 'string' },
  'display-name': { type: 'string' },
  groups: { type: 'string' },
  'password-env': { type: 'string' },
  // Declared only to refuse it with a clear message (see readNewPassword).
  password: { type: 'string' },
  json: { type: 'boolean' },
} as const;

function parseRoles(args: CommandArgs): Role[] | undefined {
  const roles = listOption(args, 'roles');
  for (const r of roles ?? []) {
    if (!(ROLES as readonly string[]).includes(r)) throw new UsageError(`unknown role '${r}' (roles: ${ROLES.join(', ')})`);
  }
  return roles as Role[] | undefined;
}

export interface UserInput {
  username: string;
  displayName: string | undefined;
  groups: string[] | undefined;
  password: string;
}

/** Validates the command line, then reads the password (env or prompt). */
export async function userInputOf(args: CommandArgs): Promise<UserInput> {
  if (args.positionals.length > 0) throw new UsageError(`unexpected argument '${args.positionals[0]}'`);
  const username = requireStringOption(args, 'username');
  const displayName = stringOption(args, 'display-name');
  const groups = listOption(args, 'groups');
  const password = await readNewPassword(args);
  return { username, displayName, groups, password };
}

/** Prints the created user, or the refusal (exit 1) with the fields at fault. */
export async function reportCreation(args: CommandArgs, command: string, create: () => Promise<UserView>): Promise<number> {
  try {
    const user = await create();
    if (args.values.json === true) args.out(JSON.stringify({ user: userToJson(user) }));
    else {
      const roles = user.roles.length === 0 ? 'no roles' : `roles ${user.roles.join(', ')}`;
      const groups = user.groups.length === 0 ? '' : `, groups ${user.groups.join(', ')}`;
      args.out(`created user ${user.username} (${user.id}) with ${roles}${groups}`);
    }
    return 0;
  } catch (err) {
    if (!isAppError(err)) throw err;
    args.err(`stepgate ${command}: ${err.code}: ${err.detail ?? err.title}`);
    for (const p of err.invalidParams ?? []) args.err(`  ${p.pointer === '' ? '(input)' : p.pointer}: ${p.reason}`);
    return 1;
  }
}

export const usersCreateCommand: Command = {
  name: ['users', 'create'],
  summary: 'Create a user with a password, optional roles and groups.',
  usage: [
    'stepgate users create --username U [--display-name N] [--roles admin,helpdesk,auditor]',
    '                      [--groups g1,g2] [--password-env VAR] [--json] [--config FILE]',
    '',
    '  The password is read from the environment variable named by --password-env, or',
    '  prompted for (twice, without echo) on a terminal. It is never taken from the',
    '  command line. Exit 0 created, 1 refused (taken name, weak password…), 2 bad usage.',
  ].join('\n'),
  options: { ...USER_OPTIONS, roles: { type: 'string' } },
  async run(args) {
    const roles = parseRoles(args);
    const input = await userInputOf(args);
    const gw = await openCliGateway(args.config());
    try {
      return await reportCreation(args, 'users create', () => createUser(gw, { ...input, roles }, { actor: cliActor() }));
    } finally {
      await gw.close();
    }
  },
};
