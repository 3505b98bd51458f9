import { captureBatches } from '../batch/capture.js';
import type { MailqSettings } from '../config.js';
import type { CommandRunner } from '../schedule/scheduler.js';
import type { Invocation } from './invocation.js';
import type { Output } from './output.js';

/**
 * Runs a schedule entry's command line as a CLI run of its own, in this process: the same flags,
 * validation and exit codes as typed by hand, and no process start per slot. The scheduler's
 * database, config file and prefix are passed on unless the line sets its own.
 */
export function cliCommandRunner(settings: MailqSettings, configPath: string | undefined, invocation: Invocation): CommandRunner {
  return async (argv) => {
    const lines: string[] = [];
    const output: Output = {
      isTTY: false,
      out: (text) => {
        lines.push(text);
        invocation.output.out(text);
      },
      err: (text) => {
        lines.push(text);
        invocation.output.err(text);
      },
    };
    const { result, batchIds } = await captureBatches(() => invocation.runCommandLine(withSchedulerFlags(argv, settings, configPath), output));
    return { exitCode: result, batchIds, output: lines.join('\n') };
  };
}

function withSchedulerFlags(argv: string[], settings: MailqSettings, configPath: string | undefined): string[] {
  const has = (flag: string) => argv.some((arg) => arg === flag || arg.startsWith(`${flag}=`));
  const extra: string[] = [];
  if (!has('--database-url')) extra.push(`--database-url=${settings.databaseUrl}`);
  if (configPath && !has('--config')) extra.push(`--config=${configPath}`);
  if (settings.tablePrefix && !has('--prefix')) extra.push(`--prefix=${settings.tablePrefix}`);
  return [...argv, ...extra];
}
