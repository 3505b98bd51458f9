import { captureBatches } from '../batch/capture.js';
import type { MailqSettings } from '../config.js';
import type { CommandRunner } from '../schedule/scheduler.js';
import { cliState } from './command.js';
import type { Output } from './output.js';

let queue: Promise<unknown> = Promise.resolve();

/**
 * Runs a schedule entry's command line through the CLI's own parser, `main(argv)`, in this
 * process: the same flags, validation and exit codes as typed by hand, and no process start per
 * slot. The scheduler's database (by environment), config file and prefix are passed on unless
 * the line sets its own. Runs are serialised: the CLI keeps one output and exit code at a time.
 */
export function cliCommandRunner(settings: MailqSettings, configPath: string | undefined, output: Output): CommandRunner {
  return (argv) => {
    const run = queue.then(() => runOnce(withSchedulerFlags(argv, settings, configPath), output, schedulerEnv(settings)));
    queue = run.catch(() => undefined);
    return run;
  };
}

async function runOnce(argv: string[], output: Output, env: NodeJS.ProcessEnv): Promise<{ exitCode: number; batchIds: string[]; output: string }> {
  const { main } = await import('./main.js');
  const lines: string[] = [];
  const captured: Output = {
    isTTY: false,
    out: (text) => {
      lines.push(text);
      output.out(text);
    },
    err: (text) => {
      lines.push(text);
      output.err(text);
    },
  };
  const outer = { ...cliState };
  try {
    const { result, batchIds } = await captureBatches(() => main(argv, captured, { env }));
    return { exitCode: result, batchIds, output: lines.join('\n') };
  } finally {
    Object.assign(cliState, outer);
  }
}

/**
 * The scheduler's database reaches the command through the environment it reads settings from:
 * the environment outranks the config file as the scheduler's own URL did, and a URL never sits
 * in an argument list (where a command that starts processes would pass it on, visible in `ps`).
 */
function schedulerEnv(settings: MailqSettings): NodeJS.ProcessEnv {
  return { ...process.env, MAILQ_DATABASE_URL: settings.databaseUrl };
}

/** The scheduler's config file and table prefix, unless the entry's line sets its own. Exported for tests. */
export function withSchedulerFlags(argv: string[], settings: MailqSettings, configPath: string | undefined): string[] {
  const has = (flag: string) => argv.some((arg) => arg === flag || arg.startsWith(`${flag}=`));
  const extra: string[] = [];
  if (configPath && !has('--config')) extra.push(`--config=${configPath}`);
  if (settings.tablePrefix && !has('--prefix')) extra.push(`--prefix=${settings.tablePrefix}`);
  return [...argv, ...extra];
}
