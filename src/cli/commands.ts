import type { Command } from './command.ts';
import { configCheckCommand } from './config-command.ts';
import { migrateCommand } from './migrate-command.ts';
import { serveCommand } from './serve-command.ts';

/** Every CLI command. Add new ones here. */
export const commands: Command[] = [serveCommand, migrateCommand, configCheckCommand];
