import type { Output } from './output.js';

/**
 * One run of the CLI: where it prints, the exit code its command sets, and the arguments it got.
 * Each run has its own, so a command line run from inside another (a schedule entry) shares nothing
 * with the run that started it.
 */
export interface Invocation {
  readonly output: Output;
  /**
   * The environment settings are read from (default: process.env). The scheduler hands its
   * database URL to the commands it runs here, never as a `--database-url` argument.
   */
  readonly env?: NodeJS.ProcessEnv;
  /** The arguments as given (a supervisor hands them to its worker processes). */
  readonly argv: readonly string[];
  exitCode: number;
  /** Runs another command line as a run of its own, printing to `output`; resolves to its exit code. */
  readonly runCommandLine: (argv: string[], output: Output, options?: InvocationOptions) => Promise<number>;
}

export interface InvocationOptions {
  /** The environment the run reads settings from (default: process.env). */
  env?: NodeJS.ProcessEnv;
}

/** The key under which yargs hands the invocation to a command's handler (its parse context). */
export const INVOCATION_KEY = 'mailqInvocation';
