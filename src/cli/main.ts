import yargs from 'yargs';
import { commands } from './commands/index.js';
import { INVOCATION_KEY, type Invocation, type InvocationOptions } from './invocation.js';
import { processOutput, type Output } from './output.js';

/**
 * Parses argv, runs one command, returns its exit code. Bad flags and unknown commands are
 * one line on stderr and exit code 2.
 */
export async function main(argv: string[], output: Output = processOutput, options: InvocationOptions = {}): Promise<number> {
  const invocation: Invocation = { output, argv: [...argv], env: options.env, exitCode: 0, runCommandLine: main };
  let usageError: string | undefined;
  const parser = yargs(argv)
    .scriptName('mailq')
    .usage('$0 <command> [options]')
    // Checked with the other settings (one zod schema); a flag without its value is refused here.
    .option('database-url', { type: 'string', requiresArg: true, describe: 'mysql://user:password@host:3306/db (default: MAILQ_DATABASE_URL, DATABASE_URL; prefer those: arguments are visible to every user in ps)' })
    .option('config', { type: 'string', requiresArg: true, describe: 'Config file (default: ./mailq.config.{js,mjs,ts})' })
    .option('prefix', { type: 'string', requiresArg: true, describe: 'Table name prefix (letters, digits, _; at most 24)' })
    .option('mailbox', { type: 'boolean', describe: 'Enable the mailbox sync add-on (its tables, job and settings) as a `mailbox: {}` config section does' })
    .option('log-level', { type: 'string', requiresArg: true, describe: 'fatal|error|warn|info|debug|trace|silent' })
    .option('verbose', { type: 'boolean', describe: 'Debug logs and stack traces', default: false })
    .command(commands)
    .demandCommand(1, 'name a command (mailq --help lists them)')
    .strict()
    .recommendCommands()
    .help()
    .version()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .exitProcess(false)
    // Throw, never return: a fail handler that returns lets yargs run the command anyway, so
    // `sync-mailbox --queue --dry-rn` would dispatch for real before "Unknown argument" is printed.
    .fail((message, error) => {
      if (error) throw error;
      usageError = message;
      throw new Error(message);
    });
  try {
    await parser.parseAsync(argv, { [INVOCATION_KEY]: invocation });
  } catch (error) {
    usageError ??= (error as Error).message;
  }
  if (usageError) {
    output.err(`mailq: ${usageError}`);
    output.err('Run `mailq --help` for usage.');
    return 2;
  }
  return invocation.exitCode;
}
