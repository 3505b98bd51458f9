import { captureBatches } from '../batch/capture.js';
import type { MailqSettings } from '../config.js';
import type { CommandRunner } from '../schedule/scheduler.js';
import type { Invocation } from './invocation.js';
import type { Output } from './output.js';

/**
 * Runs a schedule entry's command line as a CLI run of its own, in this process: the same flags,
 * validation and exit codes as typed by hand, and no process start per slot. The scheduler's
 * database (by environment), config file and prefix are passed on unless the line sets its own.
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
    const env = schedulerEnv(settings, invocation.env);
    const { result, batchIds } = await captureBatches(() => invocation.runCommandLine(withSchedulerFlags(argv, settings, configPath), output, { env }));
    return { exitCode: result, batchIds, output: lines.join('\n') };
  };
}

/**
 * The scheduler's database reaches the command through the environment it reads settings from:
 * the environment outranks the config file as the scheduler's own URL did, and a URL never sits
 * in an argument list (where a command that starts processes would pass it on, visible in `ps`).
 */
function schedulerEnv(settings: MailqSettings, env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return { ...env, MAILQ_DATABASE_URL: settings.databaseUrl };
}

/** The scheduler's config file and table prefix, unless the entry's line sets its own. Exported for tests. */
export function withSchedulerFlags(argv: string[], settings: MailqSettings, configPath: string | undefined): string[] {
  const has = (flag: string) => argv.some((arg) => arg === flag || arg.startsWith(`${flag}=`));
  const extra: string[] = [];
  if (configPath && !has('--config')) extra.push(`--config=${configPath}`);
  if (settings.tablePrefix && !has('--prefix')) extra.push(`--prefix=${settings.tablePrefix}`);
  return [...argv, ...extra];
}
