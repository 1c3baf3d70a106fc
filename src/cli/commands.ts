import type { Command } from './command.ts';
import { configCheckCommand } from './config-command.ts';
import { migrateCommand } from './migrate-command.ts';
import { serveCommand } from './serve-command.ts';
import { keysRotateMasterCommand } from './keys-command.ts';
import { auditVerifyCommand } from './audit-command.ts';
import { usersCreateCommand } from './users-command.ts';
import { adminCreateCommand } from './admin-command.ts';
import { clientsCommands } from './clients-command.ts';
import { policiesCommands } from './policies-command.ts';
import { keysListCommand, keysRevokeCommand, keysRotateCommand } from './signing-keys-command.ts';
import { usersResetFactorsCommand, usersResetPasswordCommand } from './helpdesk-command.ts';
import { paymentCodeCommands } from './payment-code-command.ts';
import { demoCommand } from './demo-command.ts';
import { tokensImportCommand } from './tokens-command.ts';
import { notificationsListCommand, notificationsRetryCommand } from './notifications-command.ts';

/** Every CLI command. Add new ones here. */
export const commands: Command[] = [serveCommand, migrateCommand, configCheckCommand, keysRotateMasterCommand, keysRotateCommand, keysRevokeCommand, keysListCommand, auditVerifyCommand, usersCreateCommand, usersResetPasswordCommand, usersResetFactorsCommand, adminCreateCommand, ...clientsCommands, ...policiesCommands, ...paymentCodeCommands, demoCommand, tokensImportCommand, notificationsListCommand, notificationsRetryCommand];
