import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

/** Debian's Chromium (`apt-get install -y chromium`), or the one MAILQ_CHROMIUM names. */
export const CHROMIUM = process.env.MAILQ_CHROMIUM ?? '/usr/bin/chromium';

/**
 * Why the browser tests cannot run here, or undefined when they can. In CI a missing Chromium is
 * an error (.ci/run installs it), so a browser test never passes there by being skipped.
 */
export function browserMissing(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  const reason = `no Chromium at ${CHROMIUM} (apt-get install -y chromium, or set MAILQ_CHROMIUM)`;
  if (process.env.CI) throw new Error(`browser tests must run in CI: ${reason}`);
  return reason;
}

/** Headless Chromium with the flags this sandbox needs (no background calls to Google's hosts). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
