import type { CommandModule } from 'yargs';
import type { GlobalFlags } from '../context.js';
import { dispatchCommand } from './dispatch.js';
import { failedCommand, failedShowCommand } from './failed.js';
import { migrateCommand } from './migrate.js';
import { flushCommand, forgetCommand, retryCommand } from './retry.js';
import { workCommand } from './work.js';
import { syncMailboxCommand } from './sync-mailbox.js';
import { fakeTwsCommand } from './fake-tws.js';
import { demoCommand } from './demo.js';
import { clearCommand, pauseCommand, restartCommand, resumeCommand } from './controls.js';
import { monitorCommand, statusCommand } from './monitor.js';
import { doctorCommand } from './doctor.js';
import { batchCancelCommand, batchCommand, batchesCommand } from './batches.js';
import { scheduleCommand, scheduleListCommand, scheduleRunCommand } from './schedule.js';
import { dashboardCommand } from './dashboard.js';

/** Every verb of the CLI; each is a thin wrapper over one library call. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: Array<CommandModule<GlobalFlags, any>> = [
  migrateCommand,
  workCommand,
  dispatchCommand,
  failedCommand,
  failedShowCommand,
  retryCommand,
  forgetCommand,
  flushCommand,
  restartCommand,
  pauseCommand,
  resumeCommand,
  clearCommand,
  monitorCommand,
  statusCommand,
  doctorCommand,
  batchesCommand,
  batchCommand,
  batchCancelCommand,
  scheduleCommand,
  scheduleRunCommand,
  scheduleListCommand,
  dashboardCommand,
  // The mailbox sync add-on's verbs (its job is registered where the settings enable it: see context.ts).
  syncMailboxCommand,
  fakeTwsCommand,
  demoCommand,
];
