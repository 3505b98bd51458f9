import yargs from 'yargs';
import { cliState } from './command.js';
import { commands } from './commands/index.js';
import { processOutput, type Output } from './output.js';

/**
 * Parses argv, runs one command, returns its exit code. Bad flags and unknown commands are
 * one line on stderr and exit code 2.
 */
export interface MainOptions {
  /**
   * The environment settings are read from (default: process.env). The scheduler hands its
   * database URL to the commands it runs here, never as a `--database-url` argument.
   */
  env?: NodeJS.ProcessEnv;
}

export async function main(argv: string[], output: Output = processOutput, options: MainOptions = {}): Promise<number> {
  cliState.output = output;
  cliState.exitCode = 0;
  cliState.argv = [...argv];
  cliState.env = options.env;
  let usageError: string | undefined;
  const parser = yargs(argv)
    .scriptName('mailq')
    .usage('$0 <command> [options]')
    // Checked with the other settings (one zod schema); a flag without its value is refused here.
    .option('database-url', { type: 'string', requiresArg: true, describe: 'mysql://user:password@host:3306/db (default: MAILQ_DATABASE_URL, DATABASE_URL; prefer those: arguments are visible to every user in ps)' })
    .option('config', { type: 'string', requiresArg: true, describe: 'Config file (default: ./mailq.config.{js,mjs,ts})' })
    .option('prefix', { type: 'string', requiresArg: true, describe: 'Table name prefix (letters, digits, _; at most 24)' })
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
    await parser.parseAsync();
  } catch (error) {
    usageError ??= (error as Error).message;
  }
  if (usageError) {
    output.err(`mailq: ${usageError}`);
    output.err('Run `mailq --help` for usage.');
    return 2;
  }
  return cliState.exitCode;
}
