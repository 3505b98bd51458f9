import type { Output } from './output.js';

/**
 * One run of the CLI: where it prints, the exit code its command sets, and the arguments it got.
 * Each run has its own, so a command line run from inside another (a schedule entry) shares nothing
 * with the run that started it.
 */
export interface Invocation {
  readonly output: Output;
  /** The arguments as given (a supervisor hands them to its worker processes). */
  readonly argv: readonly string[];
  exitCode: number;
  /** Runs another command line as a run of its own, printing to `output`; resolves to its exit code. */
  readonly runCommandLine: (argv: string[], output: Output) => Promise<number>;
}

/** The key under which yargs hands the invocation to a command's handler (its parse context). */
export const INVOCATION_KEY = 'mailqInvocation';
